"""The three scenarios of incremental learning (van de Ven, Tuytelaars and Tolias 2022;
Hsu et al. 2018), for sequences whose tasks are groups of classes (split sequences).

- task-incremental ("task"): a head per task, holding that task's classes; a sample's
  label is the position of its class within its task (split MNIST's {2, 3} -> 0, 1), and
  every task is trained and evaluated with its own head (the task is known at test time).
- domain-incremental ("domain"): one shared head with as many units as a task has classes,
  the same position labels; the task is not known and need not be.
- class-incremental ("class"): one head over every class, the original labels. While task
  k trains, the outputs of classes not seen yet are masked out of the softmax (the "active
  outputs" of both reference codes); evaluation reads every output.

Permuted sequences and the paper's pairs keep one head and their labels in every task:
they are domain-incremental by construction.

The data side (`apply`) relabels the tasks and says how many heads and units the model
needs; the model side (`install`) puts an `OutputHeads` in place of the model's last
linear layer, and `for_training` / `for_evaluation` point it at a task.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import Tensor, nn

from classp.errors import UserError

SCENARIOS = ("task", "domain", "class")
# A logit this low gets probability 0 in float32 and bfloat16 without the NaN gradients an
# infinite one gives where a probability-weighted sum multiplies it by 0 (the exact Fisher).
MASKED_LOGIT = -1e9


def check_scenario(sequence: str, scenario: str | None, split_sequence: bool) -> None:
    if scenario is None:
        return
    if scenario not in SCENARIOS:
        raise UserError(f"unknown scenario {scenario!r}; choose one of: {', '.join(SCENARIOS)}")
    if not split_sequence and scenario != "domain":
        raise UserError(f"{sequence!r} shares one head and its labels across tasks: it is "
                        f"domain-incremental by construction; the task and class scenarios are "
                        f"for the split sequences")


def apply(sequence, scenario: str):
    """The sequence under `scenario`: labels mapped, the input's head count and units set.
    Its tasks must name their classes (`Task.classes`)."""
    from classp.data.base import Split

    if scenario == "class":
        return replace(sequence, scenario="class")
    tasks = []
    for task in sequence.tasks:
        lookup = torch.full((max(task.classes) + 1,), -1, dtype=torch.long)
        lookup[list(task.classes)] = torch.arange(len(task.classes))

        def relabel(split: Split, lookup=lookup) -> Split:
            return Split(split.x, lookup[split.y], split.task_ids)

        tasks.append(task.with_splits(relabel))
    units = len(sequence.tasks[0].classes)
    if any(len(t.classes) != units for t in sequence.tasks):
        raise UserError(f"{sequence.name}: the {scenario} scenario needs tasks of equal size")
    heads = len(tasks) if scenario == "task" else 1
    return replace(sequence, tasks=tasks, scenario=scenario,
                   input=replace(sequence.input, num_classes=units, heads=heads))


class OutputHeads(nn.Module):
    """A head per task (task-incremental): `active` picks the head that computes the
    output, or, for a batch mixing tasks (joint training), `sample_tasks` each sample's."""

    def __init__(self, first: nn.Linear, count: int):
        super().__init__()
        rest = [nn.Linear(first.in_features, first.out_features, bias=first.bias is not None)
                for _ in range(count - 1)]
        self.heads = nn.ModuleList([first, *rest])
        self.active = 0
        self.sample_tasks: Tensor | None = None

    def forward(self, h: Tensor) -> Tensor:
        if self.sample_tasks is None:
            return self.heads[self.active](h)
        every = torch.stack([head(h) for head in self.heads], 1)
        return every[torch.arange(len(h), device=h.device), self.sample_tasks]


class ActiveOutputs(nn.Linear):
    """The model's last linear layer whose outputs of classes not seen yet are masked while
    `masked` (class-incremental training). Its parameters are the layer's own, under the
    layer's names, so runs read the same in every scenario."""

    def __init__(self, layer: nn.Linear):
        # built on the meta device: no second initialisation, no draw from the seeded stream
        super().__init__(layer.in_features, layer.out_features, bias=layer.bias is not None,
                         device="meta")
        self.weight, self.bias = layer.weight, layer.bias
        self.masked = False
        self.register_buffer("mask", torch.zeros(layer.out_features, device=layer.weight.device),
                             persistent=False)

    def forward(self, h: Tensor) -> Tensor:
        out = super().forward(h)
        return out + self.mask if self.masked else out

    def seen(self, out: Tensor) -> Tensor:
        """`out` with the masked outputs set to 0: what an importance that reads the output
        itself (MAS) may see of it."""
        return out.masked_fill(self.mask != 0, 0.0) if self.masked else out


def _active_outputs(model: nn.Module) -> ActiveOutputs | None:
    return next((m for m in model.modules() if isinstance(m, ActiveOutputs)), None)


def seen_outputs(model: nn.Module, out: Tensor) -> Tensor:
    """The model's output without the outputs its scenario masks (unchanged without one)."""
    layer = _active_outputs(model)
    return out if layer is None else layer.seen(out)


def seen_count(model: nn.Module, out: Tensor) -> int:
    """How many of the output's columns are not masked."""
    layer = _active_outputs(model)
    return out.shape[1] if layer is None or not layer.masked else int((layer.mask == 0).sum())


def install(model: nn.Module, sequence) -> OutputHeads | ActiveOutputs | None:
    """Put the scenario's output layer in place of the model's last linear layer: a head per
    task (task), the active outputs (class); None for domain-incremental sequences, whose
    model stays as built."""
    if sequence.scenario == "domain":
        return None
    parent, name, last = None, None, None
    for module in model.modules():
        for child_name, child in module.named_children():
            if isinstance(child, nn.Linear):
                parent, name, last = module, child_name, child
    if last is None:
        raise UserError(f"the {sequence.scenario} scenario needs a model whose output layer is "
                        f"linear")
    layer = OutputHeads(last, sequence.input.heads) if sequence.scenario == "task" \
        else ActiveOutputs(last)
    setattr(parent, name, layer)
    return layer


def for_training(layer, sequence, k: int) -> None:
    """Point the output layer at task k for training (and the method's end of task): its
    head (task), the classes of tasks 1..k (class)."""
    if isinstance(layer, OutputHeads):
        layer.active, layer.sample_tasks = k, None
    elif isinstance(layer, ActiveOutputs):
        seen = sorted({c for task in sequence.tasks[: k + 1] for c in task.classes})
        mask = torch.full_like(layer.mask, MASKED_LOGIT)
        mask[seen] = 0.0
        layer.mask.copy_(mask)
        layer.masked = True


def for_evaluation(layer, sequence, j: int) -> None:
    """Point the output layer at task j for evaluation: its own head (task), every output
    (class)."""
    if isinstance(layer, OutputHeads):
        layer.active, layer.sample_tasks = j, None
    elif isinstance(layer, ActiveOutputs):
        layer.masked = False
