"""What a continual-learning method is: an optimizer and a few hooks.

The engine calls, in order: `start_run(plan)` with what the run will train (tasks, epochs,
batch size: the published schedules count steps from it); `optimizer(params)` once per
run (so optimizer state, such as CLASSP's accumulator, lives across tasks); per task
`begin_task`, then per step
`penalty` (added to the loss), `after_step` (tensor work) and `step_done` (host
bookkeeping); and `end_task` with the task's training data.

Under CUDA graphs (`classp.stepping`) a step is captured once and replayed: `penalty` and
`after_step` run inside the captured region, so they may only do tensor work (no reads to
the host, no Python state that changes from step to step). Host state that changes what a
step computes (a phase switch, a penalty switched on) lives in `step_done` and is named by
`step_signature`, so that a changed step gets a graph of its own. Graphs are dropped
between tasks, so state that changes only there needs no signature.

Each method reports the bytes of state it keeps across tasks, measured from its tensors.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from classp.methods.params import Param, check_params


def tensor_bytes(tensors: Iterable[Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


@dataclass(frozen=True)
class TaskPlan:
    """How one task will be trained."""

    train_x: Tensor
    train_y: Tensor
    epochs: int
    batch_size: int

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(len(self.train_y) / self.batch_size)


@dataclass(frozen=True)
class RunPlan:
    tasks: tuple[TaskPlan, ...]
    seed: int


# The optimizers a regularisation method (EWC, SI, L2, MAS) may step with: plain SGD in
# the textbooks, Adam in the field's reference protocols (Hsu et al., van de Ven et al.).
OPTIMIZERS = ("sgd", "adam", "adagrad")

# The parameters every method that steps with one of them declares.
LR = Param(0.01, "learning rate", low=0, above=True)
STEPPED_BY = {"lr": LR, "optimizer": Param("sgd", "the optimizer that steps the method",
                                           choices=OPTIMIZERS)}


class Method:
    name: ClassVar[str]
    #: its hyper-parameters, each declared once (classp.methods.params); anything else
    #: given is an error
    PARAMS: ClassVar[Mapping[str, Param]]
    #: their defaults, derived from PARAMS
    defaults: ClassVar[Mapping[str, Any]]
    #: train on the union of tasks seen so far instead of the current task alone
    joint: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "PARAMS" in cls.__dict__:
            cls.defaults = {k: p.default for k, p in cls.PARAMS.items()}

    def __init__(self, **params: Any):
        self.params = check_params(self.name, self.PARAMS, params)

    # -- hooks --------------------------------------------------------------------------
    def start_run(self, plan: RunPlan) -> None:
        """Called once before anything trains."""
        self.plan = plan

    def optimizer(self, params: list[nn.Parameter]) -> torch.optim.Optimizer:
        raise NotImplementedError

    def begin_task(self, task_index: int, model: nn.Module, optimizer) -> None:
        """Called before training task `task_index` (0-based)."""

    def skips_task(self, task_index: int, num_tasks: int) -> bool:
        """True: train nothing on this task (its end and its evaluation still happen)."""
        return False

    def penalty(self, model: nn.Module) -> Tensor | None:
        """A regulariser added to the task loss, or None."""
        return None

    def after_step(self, model: nn.Module) -> None:
        """Tensor work after each optimizer step, gradients still in `.grad` (captured with
        the step under CUDA graphs: device work only)."""

    def step_done(self) -> None:
        """Host bookkeeping after each step (counters, schedule switches); never captured."""

    def step_signature(self) -> Hashable:
        """Everything on the host, besides the optimizer's settings, that decides what the
        next step computes (e.g. whether a penalty is on). Graphed steps are captured once
        per signature."""
        return None

    def end_task(self, task_index: int, model: nn.Module, train_x: Tensor, train_y: Tensor) -> None:
        """Called after training task `task_index`, with its training data."""

    # -- reporting ----------------------------------------------------------------------
    def own_tensors(self) -> list[Tensor]:
        """Tensors the method itself keeps across tasks (besides the optimizer's)."""
        return []

    def state_bytes(self, optimizer) -> int:
        """Bytes kept across tasks: the optimizer's state tensors (CLASSP's update counts are
        instrumentation, not method state), the scratch buffers it keeps resident between
        steps (CLASSP's flat path: two floats per weight), and the method's own tensors."""
        kept = [
            value
            for state in optimizer.state.values()
            for key, value in state.items()
            if isinstance(value, Tensor) and key not in ("update_count", "step")
        ]
        scratch = optimizer.scratch_bytes() if hasattr(optimizer, "scratch_bytes") else 0
        return tensor_bytes(kept) + scratch + tensor_bytes(self.own_tensors())


class SteppedBy(Method):
    """A method that steps with torch's SGD, Adam or AdaGrad, by its `optimizer` parameter
    (the regularisers and joint training), with torch's defaults besides lr, as the
    reference codes build them."""

    def optimizer(self, params: list[nn.Parameter]) -> torch.optim.Optimizer:
        name, lr = self.params["optimizer"], self.params["lr"]
        if name == "adam":
            return torch.optim.Adam(params, lr=lr, foreach=True)
        if name == "adagrad":
            return torch.optim.Adagrad(params, lr=lr, foreach=True)
        return torch.optim.SGD(params, lr=lr)
