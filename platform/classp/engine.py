"""The training loop over tasks: one readable top-down function, `run(config, observers)`.

The engine knows nothing of Optuna or MLflow. Observers receive events (run start, every
`log_every` steps, task end, run end) and may stop the run by raising `StopRun`
(the study's pruner does).
"""

from __future__ import annotations

import math
import time
import types
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol, Union, get_args, get_origin, get_type_hints

import torch

from classp import interrupts, metrics, scenarios
from classp.data import DataOptions, Task, TaskSequence, check_data_options, load_sequence
from classp.data.base import Split
from classp.errors import UserError
from classp.methods import build_method
from classp.methods.base import Method, RunPlan, TaskPlan
from classp.models import build_model, check_model_name
from classp.sparsity import UpdateCounter
from classp.stepping import STEP_MODES, RunningSums, StepBody, build_steps

SPLITS = ("train", "val", "test")
MIN_POINTS_PER_TASK = 20


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines a run. Flattened to a dict for logging (`flat()`)."""

    sequence: str = "split-digits"
    method: str = "classp"
    method_params: dict[str, Any] = field(default_factory=dict)
    model: str | None = None  # None: the sequence's own model
    epochs: tuple[int, ...] | int | None = None  # per task, or one for all; None: protocol
    batch_size: int | None = None
    shuffle: bool | None = None
    seed: int = 0
    device: str = "auto"
    eval_splits: tuple[str, ...] = ("val", "test")
    eval_train: bool | None = None  # None: as the sequence's protocol says (the paper: yes)
    eval_batch_size: int = 1024
    # At most this many steps per reported point; fewer on a short task, so that every
    # task gives at least MIN_POINTS_PER_TASK points (or one per step).
    log_every: int = 25
    track_updates: bool = False  # per-weight update counts (any method), for sparsity
    progress: bool = False
    data_dir: str | None = None
    download: bool = False
    subsample: float = 1.0
    num_tasks: int | None = None
    protocol: str = "study"  # "paper": what the published scripts did (paper sequences)
    # Train each task in passes until the last batch's loss is below its target (one per
    # task; then `epochs` caps the passes). None: as the protocol says (the published text
    # protocol has targets), else a fixed number of epochs.
    loss_targets: tuple[float, ...] | None = None
    imdb_labels: str = "corrected"  # or "published": IMDB pos -> FPB's neutral
    # Split sequences: "task", "domain" or "class" incremental (classp.scenarios); None:
    # the sequence's own (class for split sequences; the others are domain-incremental).
    scenario: str | None = None
    # "auto": training steps replayed from CUDA graphs on a GPU, eager on a CPU (see
    # classp.stepping); "eager" or "graphed" to choose.
    step_mode: str = "auto"

    def flat(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if k != "method_params"}
        out.update({f"method.{k}": v for k, v in self.method_params.items()})
        return out


# What a trial sets itself; a study spec's [run] table may set every other RunConfig field.
PER_TRIAL_FIELDS = frozenset({"sequence", "method", "method_params", "seed", "eval_splits",
                              "track_updates", "progress"})


def run_settings() -> dict[str, tuple[type, ...]]:
    """The settings a spec's [run] table may give, each with the TOML types it accepts,
    read off RunConfig's fields (so a new field is a new setting, with no list to keep)."""
    hints = get_type_hints(RunConfig)
    out = {}
    for name, hint in hints.items():
        if name in PER_TRIAL_FIELDS:
            continue
        members = get_args(hint) if get_origin(hint) in (Union, types.UnionType) else (hint,)
        accepted: list[type] = []
        for member in members:
            if get_origin(member) is tuple:
                accepted.append(list)  # a TOML array; the spec reader makes it a tuple
            elif member is float:
                accepted += [float, int]
            elif member in (int, str, bool):
                accepted.append(member)
        out[name] = tuple(sorted(dict.fromkeys(accepted), key=lambda t: t is list))
    return out


@dataclass
class Result:
    config: RunConfig
    status: str  # "finished", "diverged" or "stopped"
    task_names: list[str]
    accuracy: dict[str, list[list[float]]]  # split -> R, (T+1) x T
    metrics: dict[str, dict[str, float]]  # split -> metrics.summary(R)
    state_bytes: int
    steps: int
    seconds: float
    diverged_at: dict[str, int] | None = None  # {"step": ..., "task": ...}
    notes: list[str] = field(default_factory=list)
    num_parameters: int = 0
    step_mode: str = "eager"  # how the steps ran: "eager" or "graphed" (classp.stepping)
    step_counts: dict[str, int] = field(default_factory=dict)  # graphed: replayed, eager, graphs


@dataclass
class StepEvent:
    step: int  # global step, 1-based
    task: int  # 0-based
    epoch: int
    loss: float  # mean training loss over the steps since the last event
    accuracy: float  # mean training-batch accuracy over the same steps
    steps_in_window: int
    optimizer: torch.optim.Optimizer
    model: torch.nn.Module
    updates: UpdateCounter | None = None  # per-weight update counts (track_updates)


@dataclass
class TaskEndEvent:
    task: int
    task_name: str
    step: int
    accuracy: dict[str, list[float]]  # split -> accuracy on every task after this one
    optimizer: torch.optim.Optimizer
    model: torch.nn.Module
    updates: UpdateCounter | None = None
    steps_in_task: int = 0


class Observer(Protocol):
    def on_run_start(self, config: RunConfig, sequence: TaskSequence, model, method) -> None: ...
    def on_step(self, event: StepEvent) -> None: ...
    def on_task_end(self, event: TaskEndEvent) -> None: ...
    def on_run_end(self, result: Result) -> None: ...


class StopRun(Exception):
    """Raised by an observer to end the run early (e.g. a pruned trial)."""


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown device {name!r}; use auto, cpu or cuda[:N]") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError("device 'cuda' asked for but no CUDA GPU is available; use --device cpu")
    return device


def epochs_per_task(config: RunConfig, sequence: TaskSequence) -> list[int]:
    T = len(sequence.tasks)
    epochs = config.epochs if config.epochs is not None else sequence.protocol.epochs
    if isinstance(epochs, int):
        epochs = (epochs,) * T
    epochs = list(epochs)
    if len(epochs) == 1:
        epochs = epochs * T
    if len(epochs) != T:  # positive integers: check_config
        raise UserError(f"{len(epochs)} epoch counts given for {T} tasks; give one, or one per task")
    return epochs


MAX_SEED = 2**63 - 1  # torch's generators take a 64-bit seed; beyond, they overflow


def check_seed(seed) -> None:
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise UserError(f"a seed must be an integer from 0 to 2**63 - 1, got {seed!r}")


def check_config(config: RunConfig) -> None:
    """Every check of a run's settings that needs no data, so that bad input fails before
    anything loads: the one place they are checked (the command line, a spec's [run] table
    and `run` all come here)."""
    check_data_options(config.sequence, data_options(config))
    check_seed(config.seed)
    if config.model is not None:
        check_model_name(config.model)
    if config.batch_size is not None and (not isinstance(config.batch_size, int) or config.batch_size < 1):
        raise UserError(f"batch size must be a positive integer, got {config.batch_size}")
    if config.epochs is not None:
        values = [config.epochs] if isinstance(config.epochs, int) else list(config.epochs)
        if not values or any((not isinstance(e, int)) or e < 1 for e in values):
            raise UserError(f"epochs must be positive integers, got {config.epochs}")
    if config.loss_targets is not None and (
            not config.loss_targets or any(not isinstance(t, (int, float)) or isinstance(t, bool)
                                           or not 0 < t < math.inf for t in config.loss_targets)):
        raise UserError(f"loss targets must be positive finite numbers, one per task, got "
                        f"{config.loss_targets}")
    if not isinstance(config.eval_batch_size, int) or config.eval_batch_size < 1:
        raise UserError(f"eval_batch_size must be a positive integer, got {config.eval_batch_size}")
    if config.log_every < 1:
        raise UserError(f"log_every must be a positive integer, got {config.log_every}")
    if config.step_mode not in STEP_MODES:
        raise UserError(f"unknown step mode {config.step_mode!r}; choose from {', '.join(STEP_MODES)}")
    for split in config.eval_splits:
        if split not in SPLITS:
            raise UserError(f"unknown split {split!r}; choose from {', '.join(SPLITS)}")


def check_with_data(config: RunConfig, sequence: TaskSequence) -> None:
    """Every check of a run that needs its data (the device, epochs and loss targets per
    task, the model for this input), with nothing trained: a study makes them before it
    records a trial, so that a setting that cannot run fails once, not in every trial."""
    check_config(config)
    build_method(config.method, config.method_params)
    resolve_device(config.device)
    epochs_per_task(config, sequence)
    loss_targets(config, sequence)
    with torch.device("meta"):  # the model's shape checks without its memory
        build_model(config.model or sequence.protocol.model, sequence.input)


def report_every(log_every: int, steps_in_task: int) -> int:
    """Steps per reported point: `log_every`, or fewer so that a short task still gives
    MIN_POINTS_PER_TASK points (curves with a shape in the MLflow UI)."""
    return max(1, min(log_every, steps_in_task // MIN_POINTS_PER_TASK))


def resolved_settings(config: RunConfig, sequence: TaskSequence) -> dict[str, Any]:
    """The run's settings as logged: what the run used where the config left it to the
    protocol (model, batch size, epochs, shuffling, training-set evaluation, number of
    tasks), and nothing that stayed unset."""
    protocol = sequence.protocol
    out = config.flat()
    out.update(model=config.model or protocol.model,
               batch_size=config.batch_size or protocol.batch_size,
               epochs=epochs_per_task(config, sequence),
               shuffle=protocol.shuffle if config.shuffle is None else config.shuffle,
               eval_train=protocol.eval_train if config.eval_train is None else config.eval_train,
               num_tasks=len(sequence.tasks), scenario=sequence.scenario,
               iterations=list(protocol.iterations) if protocol.iterations else None)
    return {k: v for k, v in out.items() if v is not None}


def data_options(config: RunConfig) -> DataOptions:
    """Where and how a run's data is loaded."""
    return DataOptions(data_dir=Path(config.data_dir) if config.data_dir else None,
                       download=config.download, subsample=config.subsample,
                       num_tasks=config.num_tasks, protocol=config.protocol,
                       imdb_labels=config.imdb_labels, scenario=config.scenario)


def loss_targets(config: RunConfig, sequence: TaskSequence) -> tuple[float, ...] | None:
    """Per task, the training loss that ends the task (None: train a fixed number of epochs)."""
    if config.loss_targets is not None:
        targets = tuple(config.loss_targets)
    elif sequence.protocol.loss_targets is not None:
        by_method = sequence.protocol.loss_targets
        if config.method not in by_method:
            raise UserError(f"the {sequence.protocol.name} protocol of {sequence.name} has loss "
                            f"targets for {', '.join(by_method)} only; give --loss-targets for "
                            f"{config.method!r}")
        targets = by_method[config.method]
    else:
        return None
    if len(targets) == 1:
        targets = targets * len(sequence.tasks)
    if len(targets) != len(sequence.tasks):
        raise UserError(f"{len(targets)} loss targets given for {len(sequence.tasks)} tasks; give "
                        f"one, or one per task")
    return targets


@torch.inference_mode()
def evaluate(model, split: Split, batch_size: int, train_mode: bool = False) -> float:
    """Accuracy of `model` on a split: one host sync for the whole split. `train_mode`
    keeps dropout active, as the published scripts evaluated (they never call eval())."""
    if len(split) == 0:
        return float("nan")
    was_training = model.training
    model.train(train_mode)
    correct = torch.zeros((), dtype=torch.long, device=split.y.device)
    for start in range(0, len(split), batch_size):
        logits = model(split.x[start:start + batch_size])
        correct += (logits.argmax(1) == split.y[start:start + batch_size]).sum()
    model.train(was_training)
    return correct.item() / len(split)


@dataclass
class Layout:
    """How a run trains, resolved from its config and sequence (shared by `run` and
    `classp.population`): the data on the device and what the protocol left to it."""

    device: torch.device
    sequence: TaskSequence
    epochs: list[int]
    targets: tuple[float, ...] | None
    batch_size: int
    shuffle: bool
    splits: list[str]  # evaluated after every task
    train_mode_splits: set[str]  # evaluated with dropout on (the published scripts)
    iterations: tuple[int, ...] | None

    def passes(self, k: int, step: int, train_size: int, method: Method) -> tuple[int, int | None, int, int]:
        """Task k's passes over its data, the global step it ends at (None: after the
        passes), its steps per reported point, and its steps in all."""
        steps_per_pass = math.ceil(train_size / self.batch_size)
        passes, last_step = (0 if method.skips_task(k, len(self.sequence.tasks)) else self.epochs[k]), None
        if self.iterations and passes:  # shuffled passes until the task's step count
            passes = math.ceil(self.iterations[k] / steps_per_pass)
            last_step = step + self.iterations[k]
        total = self.iterations[k] if self.iterations else passes * steps_per_pass
        return passes, last_step, total, steps_per_pass

    def total_steps(self, method: Method) -> int:
        tasks = self.sequence.tasks
        return sum(self.passes(k, 0, _train_size(tasks, k, method), method)[2] if
                   not method.skips_task(k, len(tasks)) else 0 for k in range(len(tasks)))


def lay_out(config: RunConfig, sequence: TaskSequence | None) -> Layout:
    """Load the data (unless given) onto the run's device and resolve the protocol."""
    device = resolve_device(config.device)
    if sequence is None:
        sequence = load_sequence(config.sequence, data_options(config))
    sequence = sequence.to(device)
    eval_train = sequence.protocol.eval_train if config.eval_train is None else config.eval_train
    splits = list(config.eval_splits) + (["train"] if eval_train and "train" not in config.eval_splits else [])
    return Layout(
        device=device, sequence=sequence, epochs=epochs_per_task(config, sequence),
        targets=loss_targets(config, sequence),
        batch_size=config.batch_size or sequence.protocol.batch_size,
        shuffle=sequence.protocol.shuffle if config.shuffle is None else config.shuffle,
        # A split no task has (the paper protocol carves no validation) is not evaluated.
        splits=[s for s in splits if any(len(t.split(s)) for t in sequence.tasks)],
        train_mode_splits={"train"} if sequence.protocol.train_eval_mode == "train" else set(),
        iterations=sequence.protocol.iterations)


def seeded_model(config: RunConfig, layout: Layout):
    """The run's model, initialised from its seed, with its scenario's output layer; and
    the sequence as the model reads it. The same config gives the same model on a CPU."""
    sequence = layout.sequence
    torch.manual_seed(config.seed)
    model = build_model(config.model or sequence.protocol.model, sequence.input)
    heads = scenarios.install(model, sequence)  # a head per task, or active outputs
    model = model.to(layout.device)
    if _has_convolutions(model):
        # Channels-last convolutions are faster (oneDNN on a CPU, cuDNN on a GPU); the
        # weights and the arithmetic are the same.
        model = model.to(memory_format=torch.channels_last)
        sequence = _channels_last(sequence)
    return model, heads, sequence


def evaluate_tasks(model, heads, sequence: TaskSequence, split: str, layout: Layout,
                   eval_batch_size: int) -> list[float]:
    """Accuracy on every task's `split`, each read through its own head (task scenario)."""
    accuracies = []
    for j, t in enumerate(sequence.tasks):
        scenarios.for_evaluation(heads, sequence, j)  # task j's head; every output
        accuracies.append(evaluate(model, t.split(split), eval_batch_size,
                                   split in layout.train_mode_splits))
    return accuracies


def run(config: RunConfig, observers: list[Observer] = (), sequence: TaskSequence | None = None) -> Result:
    """Train one model through the task sequence and return what it remembers."""
    started = time.perf_counter()
    check_config(config)
    method: Method = build_method(config.method, config.method_params)

    # 1. Data: loaded once, as tensors on the run's device; batches are index slices.
    layout = lay_out(config, sequence)
    device, batch_size, splits = layout.device, layout.batch_size, layout.splits

    # 2. Model and method, seeded: the same config gives the same run on a CPU.
    model, heads, sequence = seeded_model(config, layout)
    tasks = sequence.tasks
    method.start_run(RunPlan(tuple(TaskPlan(t.train.x, t.train.y, e, batch_size)
                                   for t, e in zip(tasks, layout.epochs)), config.seed))
    if hasattr(method, "track_updates"):
        method.track_updates = config.track_updates
    optimizer = method.optimizer([p for p in model.parameters() if p.requires_grad])
    updates = UpdateCounter(model.named_parameters(), optimizer) if config.track_updates else None
    shuffler = torch.Generator(device="cpu").manual_seed(config.seed)
    for obs in observers:
        obs.on_run_start(config, sequence, model, method)

    # 3. R[0]: every task before any training.
    R = {s: [evaluate_tasks(model, heads, sequence, s, layout, config.eval_batch_size)] for s in splits}

    status, diverged_at, step = "finished", None, 0
    progress = _progress_bar(config, layout.total_steps(method))
    sums = RunningSums(device)
    # Joint training with a head per task picks heads per sample, set batch by batch from
    # the host: a captured graph would keep the first batch's choice, so it runs eagerly.
    step_mode = "eager" if method.joint and sequence.scenario == "task" else config.step_mode
    steps = build_steps(step_mode, StepBody(model, method, optimizer, updates, sums),
                        device, batch_size)
    window = _Window(sums, observers, optimizer, model, progress, updates)
    with interrupts.deferred():  # a Ctrl-C is raised at the next step boundary (below)
        try:
            for k, task in enumerate(tasks):
                # 4. Train task k (with the union of tasks so far for joint training).
                scenarios.for_training(heads, sequence, k)  # its head, the classes seen so far
                method.begin_task(k, model, optimizer)
                steps.reset()  # methods replace tensors between tasks: no graph outlives a task
                task_start_step = step
                train = _joint_split(tasks[: k + 1]) if method.joint else task.train
                # Joint training mixes tasks in a batch: with a head per task, each sample's own.
                per_sample_heads = heads is not None and train.task_ids is not None \
                    and sequence.scenario == "task"
                passes, last_step, task_steps, _ = layout.passes(k, step, len(train), method)
                every = report_every(config.log_every, task_steps)
                model.train()
                for epoch in range(passes):
                    order = (torch.randperm(len(train), generator=shuffler).to(device)
                             if layout.shuffle else None)
                    for start in range(0, len(train), batch_size):
                        if step == last_step:
                            break
                        index = slice(start, start + batch_size) if order is None \
                            else order[start:start + batch_size]
                        x, y = train.x[index], train.y[index]
                        if per_sample_heads:
                            heads.sample_tasks = train.task_ids[index]
                        interrupts.check()
                        step += 1
                        loss = steps.step(x, y)  # forward, backward, optimizer, sums: no host sync
                        method.step_done()
                        window.count(len(y))
                        if window.steps == every:
                            window.close(step, k, epoch)
                    # 4b. Published text protocol: whole passes until the last batch's loss is
                    #     below the task's target (one host read per pass).
                    if layout.targets is not None and loss.item() < layout.targets[k]:
                        break
                if window.steps:
                    window.close(step, k, epoch)
                if per_sample_heads:  # the end of task reads task k's head
                    heads.sample_tasks = None

                # 5. The method's end of task (EWC's Fisher, SI's importance) with the task's
                #    head, then evaluate every task: row k+1 of R.
                method.end_task(k, model, task.train.x, task.train.y)
                row = {s: evaluate_tasks(model, heads, sequence, s, layout, config.eval_batch_size)
                       for s in splits}
                for s in splits:
                    R[s].append(row[s])
                for obs in observers:
                    obs.on_task_end(TaskEndEvent(k, task.name, step, row, optimizer, model, updates,
                                                 step - task_start_step))
        except _Diverged as d:
            status, diverged_at = "diverged", {"step": d.step, "task": d.task}
        except StopRun:
            status = "stopped"
        finally:
            if progress is not None:
                progress.close()
    interrupts.check()  # one noted during the last evaluation

    # 6. The result: R per split and the metrics of each (only for a complete matrix).
    result = make_result(config, status, sequence, R, method.state_bytes(optimizer), step,
                         time.perf_counter() - started, diverged_at, list(sequence.notes) + steps.notes,
                         model, steps.mode, steps.stats())
    for obs in observers:
        obs.on_run_end(result)
    return result


def make_result(config, status, sequence, R, state_bytes, steps, seconds, diverged_at, notes, model,
                step_mode="eager", step_counts=None) -> Result:
    """A run's Result; metrics only for a complete accuracy matrix."""
    tasks = sequence.tasks
    complete = {s: m for s, m in R.items() if len(m) == len(tasks) + 1}
    return Result(
        config=config, status=status, task_names=[t.name for t in tasks], accuracy=R,
        metrics={s: metrics.summary(m) for s, m in complete.items()}, state_bytes=state_bytes,
        steps=steps, seconds=seconds, diverged_at=diverged_at, notes=notes,
        num_parameters=sum(p.numel() for p in model.parameters()),
        step_mode=step_mode, step_counts=step_counts or {})


class _Diverged(Exception):
    def __init__(self, step: int, task: int):
        super().__init__(f"non-finite loss at step {step}")
        self.step, self.task = step, task


class _Window:
    """The steps since the last event. Their sums stay on the device (`RunningSums`); the
    host reads them once per window (one sync), with the first non-finite step."""

    def __init__(self, sums: RunningSums, observers, optimizer, model, progress, updates):
        self.sums, self.observers, self.optimizer, self.model = sums, observers, optimizer, model
        self.progress, self.updates = progress, updates
        self.seen = self.steps = 0

    def count(self, batch_length: int) -> None:
        self.seen += batch_length
        self.steps += 1

    def close(self, step: int, task: int, epoch: int) -> None:
        """Tell the observers, reset; raise `_Diverged` if a step's loss was not finite."""
        loss_sum, correct, bad = self.sums.read_and_reset()
        steps, seen = self.steps, self.seen
        self.seen = self.steps = 0
        if self.progress is not None:
            self.progress.update(steps)
            self.progress.set_postfix(task=task + 1, loss=f"{loss_sum / steps:.4f}", refresh=False)
        if bad >= 0:
            raise _Diverged(bad, task)
        event = StepEvent(step, task, epoch, loss_sum / steps, correct / seen, steps,
                          self.optimizer, self.model, self.updates)
        for obs in self.observers:
            obs.on_step(event)


def _has_convolutions(model) -> bool:
    return any(isinstance(m, torch.nn.Conv2d) for m in model.modules())


def _channels_last(sequence: TaskSequence) -> TaskSequence:
    def convert(split: Split) -> Split:
        if split.x.dim() != 4:
            return split
        return Split(split.x.contiguous(memory_format=torch.channels_last), split.y, split.task_ids)

    return sequence.with_tasks([t.with_splits(convert) for t in sequence.tasks])


def _joint_split(tasks: list[Task]) -> Split:
    """The union of the tasks' training sets, each sample marked with its task."""
    ids = torch.cat([torch.full((len(t.train),), k, dtype=torch.long, device=t.train.y.device)
                     for k, t in enumerate(tasks)])
    return Split(torch.cat([t.train.x for t in tasks]), torch.cat([t.train.y for t in tasks]), ids)


def _train_size(tasks: list[Task], k: int, method: Method) -> int:
    return sum(len(t.train) for t in tasks[: k + 1]) if method.joint else len(tasks[k].train)


def _progress_bar(config: RunConfig, total_steps: int):
    if not config.progress:
        return None
    from tqdm import tqdm

    return tqdm(total=total_steps, unit="step", desc=f"{config.method} on {config.sequence}",
                leave=False, dynamic_ncols=True)
