"""Population runs: K runs of one training loop, trained in lockstep as one batched model.

A study is many small runs of one architecture; trained alone, each keeps neither a CPU
nor a GPU busy. `run_population(configs)` trains runs that share the loop's shape (task
sequence, protocol, model, epochs, batch size, scenario, evaluation) but may differ in
seed, method and the method's hyperparameters, and returns each run's `Result`: what
`engine.run` gives that config alone, within float tolerance. (Batched products round
differently from single ones, by an ulp; a rule that divides by a small accumulator,
CLASSP with a small eps or AdaGrad, can grow that into a visibly different run, as a
different number of threads does to a single run.)

How. Each member is built exactly as `engine.run` builds it (its model initialised from
its seed, its method, its optimizer with its own hyperparameters, its data order), then
its parameters become views of one buffer of shape [K, N] (classp.population_steps). A
step gathers every member's batch into one [K, B, ...] tensor and runs one batched
forward and backward (classp.population_models); autograd accumulates the data term's
gradient and each member's own penalty (computed on its own parameters, by its method's
code) into one gradient buffer of the same shape. Then the optimizers step: those with a
stacked rule (SGD, Adam, AdaGrad, CLASSP's Algorithm 1 and published rule) together, with
each member's settings as a column, in the very arithmetic of the optimizer alone; any
other alone, on its views. The methods' own work (EWC's Fisher, SI's path integral, a schedule's phase
switch) runs per member, their code unchanged.

A member that diverges or is stopped (a pruned trial) leaves the population: it is no
longer stepped, evaluated or reported, and the others go on.

Each member draws its random numbers (dropout, and anything its method draws at a task's
end) from its own generator, which starts where the global generator stands once its run
alone has built its model: per-member work (evaluation, the method's begin and end of
task) runs with the member's generator put in the global one's place, and the batched
forward draws each member's dropout masks from it (classp.population_models). So on a
CPU a member meets the very draws of its run alone.

Models: the MLPs and the paper's CNN (classp.population_models). Not yet: the
transformers, loss-target protocols (members would end tasks at different passes) and
joint training with a head per task (a head chosen per sample, per member). Each is
refused in one line.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from classp import interrupts, population_models, scenarios
from classp.data import TaskSequence
from classp.engine import (
    Layout,
    Observer,
    Result,
    RunConfig,
    StepEvent,
    StopRun,
    TaskEndEvent,
    _has_convolutions,
    _joint_split,
    _progress_bar,
    evaluate_tasks,
    lay_out,
    make_result,
    report_every,
    seeded_model,
)
from classp.errors import UserError
from classp.methods import build_method
from classp.methods.base import Method, RunPlan, TaskPlan
from classp.models import build_model
from classp.population_steps import FlatStack, StackedSteps, StackedUpdateCounts, quiet_layout_hint
from classp.run_config import check_config, loss_targets
from classp.sparsity import UpdateCounter

# What members may differ in; every other RunConfig field shapes the loop they share.
PER_MEMBER_FIELDS = ("seed", "method", "method_params", "track_updates")


@dataclass
class _Member:
    """One run of the population, with everything `engine.run` keeps for it."""

    config: RunConfig
    method: Method
    model: nn.Module
    heads: object
    optimizer: torch.optim.Optimizer
    updates: UpdateCounter | None
    shuffler: torch.Generator
    draws: torch.Generator  # the member's own global generator (dropout, method draws)
    observers: list
    R: dict[str, list[list[float]]] = field(default_factory=dict)
    status: str = "finished"  # or "diverged", "stopped"
    diverged_at: dict[str, int] | None = None
    steps: int = 0

    @property
    def active(self) -> bool:
        return self.status == "finished"


def check_population(configs: list[RunConfig]) -> None:
    """Members share everything but seed, method and method parameters."""
    if not configs:
        raise UserError("a population needs at least one run")
    first = configs[0]
    for config in configs:
        check_config(config)
        for name in RunConfig.__dataclass_fields__:
            if name not in PER_MEMBER_FIELDS + ("progress",) and getattr(config, name) != getattr(first, name):
                raise UserError(f"the runs of a population differ in {name} ({getattr(first, name)!r} "
                                f"and {getattr(config, name)!r}); only seed, method and method "
                                f"parameters may differ: run the others as a population of their own")


def check_can_train(config: RunConfig, sequence: TaskSequence) -> None:
    """What populations cannot train yet, refused in one line before anything trains."""
    model_name = config.model or sequence.protocol.model
    with torch.device("meta"):  # the model's structure without its memory
        model = build_model(model_name, sequence.input)
        scenarios.install(model, sequence)
    if not population_models.supports(model):
        raise UserError(f"populations train the MLPs and the paper's CNN for now (mlp, mlp-400, "
                        f"mlp-1000, paper-cnn, paper-cnn-published), not {model_name!r}: run "
                        f"them one by one (population 1)")
    if loss_targets(config, sequence) is not None:
        raise UserError("populations train fixed epochs; this protocol ends tasks at loss targets: "
                        "give --epochs, or run them one by one (population 1)")
    if build_method(config.method, config.method_params).joint and sequence.scenario == "task":
        raise UserError("joint training with a head per task picks heads per sample: run it "
                        "as (population 1)")


def run_population(configs: list[RunConfig], observers: list[list[Observer]] | None = None,
                   sequence: TaskSequence | None = None) -> list[Result]:
    """Train the runs of `configs` in lockstep as one batched model; a Result for each."""
    started = time.perf_counter()
    check_population(configs)
    observers = observers or [[] for _ in configs]
    layout = lay_out(configs[0], sequence)
    for config in configs:
        check_can_train(config, layout.sequence)
    members, sequence = _build_members(configs, observers, layout)
    if len({m.method.joint for m in members}) > 1:
        raise UserError("joint training and sequential methods cannot share a population")
    stack = FlatStack([[(n, p) for n, p in m.model.named_parameters() if p.requires_grad]
                       for m in members])
    steps = StackedSteps(stack, [m.optimizer for m in members])
    counts = StackedUpdateCounts(stack, [m.updates for m in members])
    template = members[0].model
    forward = population_models.batched_forward(template, stack.leaves, [m.draws for m in members],
                                                channels_last=_has_convolutions(template))
    for m in members:
        for obs in m.observers:
            obs.on_run_start(m.config, sequence, m.model, m.method)
        with _own_draws(m):
            m.R = {s: [evaluate_tasks(m.model, m.heads, sequence, s, layout, m.config.eval_batch_size)]
                   for s in layout.splits}

    tasks, K, step = sequence.tasks, len(members), 0
    method = members[0].method  # the loop's shape (skipped tasks, joint) is the same for all
    progress = _progress_bar(configs[0], layout.total_steps(method))
    sums = _Sums(K, layout.device)
    with interrupts.deferred():
        try:
            for k, task in enumerate(tasks):
                for m in _active(members):
                    scenarios.for_training(m.heads, sequence, k)
                    with _own_draws(m):
                        m.method.begin_task(k, m.model, m.optimizer)
                    m.model.train()
                stack.attach(idle=population_models.idle_parameters(template))
                steps.regroup()
                train = _joint_split(tasks[: k + 1]) if method.joint else task.train
                passes, last_step, task_steps, _ = layout.passes(k, step, len(train), method)
                every, in_window, task_start_step = report_every(configs[0].log_every, task_steps), 0, step
                for epoch in range(passes):
                    orders = _orders(members, len(train), layout)
                    for start in range(0, len(train), layout.batch_size):
                        if step == last_step or not _active(members):
                            break
                        index = (slice(start, start + layout.batch_size) if orders is None
                                 else orders[:, start:start + layout.batch_size])
                        interrupts.check()
                        step += 1
                        _step(members, stack, steps, counts, forward, sums, train, index, K, step)
                        in_window += 1
                        if in_window == every:
                            _close_window(members, sums, step, k, epoch, progress, in_window)
                            in_window = 0
                if in_window:
                    _close_window(members, sums, step, k, epoch, progress, in_window)
                for m in _active(members):
                    _end_task(m, k, task, sequence, layout, step, step - task_start_step)
                if not _active(members):
                    break
        finally:
            if progress is not None:
                progress.close()
    interrupts.check()

    seconds = time.perf_counter() - started
    results = []
    for k, m in enumerate(members):
        note = f"trained in a population of {K} runs (the seconds are the population's)"
        state_bytes = m.method.state_bytes(m.optimizer) + steps.scratch_bytes(k)
        result = make_result(m.config, m.status, sequence, m.R, state_bytes,
                             m.steps, seconds, m.diverged_at, list(sequence.notes) + [note], m.model)
        for obs in m.observers:
            obs.on_run_end(result)
        results.append(result)
    return results


def _build_members(configs: list[RunConfig], observers, layout: Layout) -> tuple[list[_Member], TaskSequence]:
    """Every member, and the sequence as the models read it (channels-last for a CNN: one
    copy for all, not one per member)."""
    members, sequence = [], None
    for config, its_observers in zip(configs, observers):
        member, its_sequence = _build_member(config, its_observers, layout)
        members.append(member)
        sequence = sequence or its_sequence
    return members, sequence


def _build_member(config: RunConfig, observers, layout: Layout) -> tuple[_Member, TaskSequence]:
    """A member as `engine.run` builds its run (same order of seeded draws)."""
    method = build_method(config.method, config.method_params)
    model, heads, sequence = seeded_model(config, layout)
    method.start_run(RunPlan(tuple(TaskPlan(t.train.x, t.train.y, e, layout.batch_size)
                                   for t, e in zip(sequence.tasks, layout.epochs)), config.seed))
    if hasattr(method, "track_updates"):
        method.track_updates = config.track_updates
    optimizer = method.optimizer([p for p in model.parameters() if p.requires_grad])
    updates = UpdateCounter(model.named_parameters(), optimizer) if config.track_updates else None
    shuffler = torch.Generator(device="cpu").manual_seed(config.seed)
    # Where the run alone's global generator stands now: its next draws are the member's.
    draws = torch.Generator(device=layout.device)
    draws.set_state(_global_generator(layout.device).get_state())
    return _Member(config, method, model, heads, optimizer, updates, shuffler, draws,
                   list(observers)), sequence


def _global_generator(device: torch.device) -> torch.Generator:
    if device.type == "cuda":
        return torch.cuda.default_generators[device.index if device.index is not None
                                             else torch.cuda.current_device()]
    return torch.default_generator


@contextmanager
def _own_draws(m: _Member):
    """The member's generator in the global one's place: what runs inside draws as its
    run alone would."""
    default = _global_generator(m.draws.device)
    saved = default.get_state()
    default.set_state(m.draws.get_state())
    try:
        yield
    finally:
        m.draws.set_state(default.get_state())
        default.set_state(saved)


def _active(members: list[_Member]) -> list[_Member]:
    return [m for m in members if m.active]


def _orders(members: list[_Member], n: int, layout: Layout) -> Tensor | None:
    """Each member's data order for this pass, from its own generator ([K, n]); None:
    the data's own order, the same for every member."""
    if not layout.shuffle:
        return None
    return torch.stack([torch.randperm(n, generator=m.shuffler) for m in members]).to(layout.device)


class _Sums:
    """Per member, the running sums of `stepping.RunningSums`, as [K] tensors on the device."""

    def __init__(self, K: int, device):
        self.loss = torch.zeros(K, device=device)
        self.correct = torch.zeros(K, device=device)
        self.first_bad_step = torch.full((K,), -1, dtype=torch.long, device=device)
        self.seen = 0

    def add(self, step: int, losses: Tensor, totals: Tensor, logits: Tensor, y: Tensor) -> None:
        bad = ~torch.isfinite(totals)
        self.first_bad_step.copy_(torch.where(bad & (self.first_bad_step < 0), step, self.first_bad_step))
        self.loss.add_(losses)
        self.correct.add_((logits.argmax(1) == y).sum(-1))  # logits [K, C, B]
        self.seen += y.shape[-1]

    def read_and_reset(self) -> tuple[list[float], list[float], list[int], int]:
        loss, correct, bad = torch.stack([self.loss, self.correct, self.first_bad_step.to(self.loss.dtype)]).tolist()
        bad = [int(b) for b in bad]  # one host read for the whole window
        seen, self.seen = self.seen, 0
        self.loss.zero_()
        self.correct.zero_()
        return loss, correct, bad, seen


def _step(members: list[_Member], stack: FlatStack, steps: StackedSteps, counts: StackedUpdateCounts,
          forward, sums: _Sums, train, index, K: int, step: int) -> None:
    """One step of every member: one batched forward and backward (the data term into the
    stacked gradient, each member's penalty into its row of it), then the optimizers."""
    stack.zero_grad()
    x, y = train.x[index], train.y[index]
    if x.dim() == train.x.dim():  # one order for all (no shuffling): the same batch K times
        x, y = x.expand(K, *x.shape), y.expand(K, *y.shape)
    logits = forward(x)  # [K, C, B]
    losses = F.cross_entropy(logits, y, reduction="none").mean(1)
    totals = list(losses.unbind())
    active = [k for k, m in enumerate(members) if m.active]
    for k in active:
        penalty = members[k].method.penalty(members[k].model)  # on the member's own parameters
        if penalty is not None:
            totals[k] = totals[k] + penalty
    with quiet_layout_hint():
        torch.stack([totals[k] for k in active]).sum().backward()
    steps.step(active, lambda k: _after_step(members[k], counted=counts.counts_for(k)))
    counts.after_step(active)
    sums.add(step, losses.detach(), torch.stack(totals).detach(), logits.detach(), y)


def _after_step(m: _Member, counted: bool) -> None:
    m.method.after_step(m.model)
    if m.updates is not None and not counted:  # else StackedUpdateCounts counts for it
        m.updates.after_step()
    m.method.step_done()
    m.steps += 1


def _close_window(members, sums: _Sums, step: int, task: int, epoch: int, progress, steps: int) -> None:
    """Every active member's StepEvent, from one host read; a member whose step was not
    finite leaves as diverged, one whose observer stops it leaves as stopped."""
    loss, correct, bad, seen = sums.read_and_reset()
    if progress is not None:
        progress.update(steps)
        progress.set_postfix(task=task + 1, refresh=False)
    for k, m in enumerate(members):
        if not m.active:
            continue
        if bad[k] >= 0:
            m.status, m.diverged_at = "diverged", {"step": bad[k], "task": task}
            continue
        event = StepEvent(step, task, epoch, loss[k] / steps, correct[k] / seen, steps,
                          m.optimizer, m.model, m.updates)
        _tell(m, lambda obs, event=event: obs.on_step(event))


def _end_task(m: _Member, k: int, task, sequence: TaskSequence, layout: Layout, step: int,
              steps_in_task: int) -> None:
    # Evaluation stays per member, by its model alone: over a whole split, K separate
    # matrix products measured faster on a CPU than one batched product.
    with _own_draws(m):
        m.method.end_task(k, m.model, task.train.x, task.train.y)
        row = {s: evaluate_tasks(m.model, m.heads, sequence, s, layout, m.config.eval_batch_size)
               for s in layout.splits}
    for s in layout.splits:
        m.R[s].append(row[s])
    event = TaskEndEvent(k, task.name, step, row, m.optimizer, m.model, m.updates, steps_in_task)
    _tell(m, lambda obs: obs.on_task_end(event))


def _tell(m: _Member, call) -> None:
    try:
        for obs in m.observers:
            call(obs)
    except StopRun:
        m.status = "stopped"
