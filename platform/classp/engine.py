"""The training loop over tasks: one readable top-down function, `run(config, observers)`.

The engine knows nothing of Optuna or MLflow. Observers receive events (run start, every
`log_every` steps, task end, run end) and may stop the run by raising `StopRun`
(the study's pruner does).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Protocol

import torch

from classp import interrupts, metrics, scenarios
from classp.data import Task, TaskSequence, load_sequence
from classp.data.base import Split
from classp.methods import build_method
from classp.methods.base import Method, RunPlan, TaskPlan
from classp.models import build_model
from classp.run_config import (
    MIN_POINTS_PER_TASK,
    RunConfig,
    check_config,
    data_options,
    epochs_per_task,
    loss_targets,
    resolve_device,
)
from classp.sparsity import UpdateCounter
from classp.stepping import RunningSums, StepBody, build_steps


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


def report_every(log_every: int, steps_in_task: int) -> int:
    """Steps per reported point: `log_every`, or fewer so that a short task still gives
    MIN_POINTS_PER_TASK points (curves with a shape in the MLflow UI)."""
    return max(1, min(log_every, steps_in_task // MIN_POINTS_PER_TASK))


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
