"""What a task sequence is: tasks with train, validation and test splits, held as tensors."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from classp.models import InputShape


@dataclass
class Split:
    """Inputs and labels of one split, preloaded: batches are index slices, not a DataLoader."""

    x: Tensor
    y: Tensor
    # The task each sample belongs to, where a split mixes tasks (joint training in the
    # task-incremental scenario picks each sample's head by it); None: one task.
    task_ids: Tensor | None = None

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def to(self, device) -> Split:
        ids = None if self.task_ids is None else self.task_ids.to(device, non_blocking=True)
        return Split(self.x.to(device, non_blocking=True), self.y.to(device, non_blocking=True), ids)

    def subset(self, index: Tensor) -> Split:
        return Split(self.x[index], self.y[index],
                     None if self.task_ids is None else self.task_ids[index])


@dataclass
class Task:
    name: str
    train: Split
    val: Split
    test: Split
    # The original classes this task holds (a split task's group), in the order that gives
    # their position within the task; () when the task holds every class of its data.
    classes: tuple[int, ...] = ()

    def split(self, name: str) -> Split:
        return {"train": self.train, "val": self.val, "test": self.test}[name]

    def to(self, device) -> Task:
        return Task(self.name, self.train.to(device), self.val.to(device), self.test.to(device),
                    self.classes)

    def with_splits(self, convert) -> Task:
        """The same task with `convert` applied to each of its splits."""
        return Task(self.name, convert(self.train), convert(self.val), convert(self.test),
                    self.classes)


@dataclass(frozen=True)
class TrainingProtocol:
    """How a sequence is trained by default (overridable per run).

    Every sequence has the protocol "study": a validation split carved from each training
    set (what studies tune on), evaluation in eval mode. The paper's sequences also have
    "paper", what the published scripts did: the whole training sets in file order, no
    validation carved out, and the training sets evaluated with the model left in training
    mode (dropout active), beside the honest held-out test sets in eval mode.
    """

    epochs: tuple[int, ...]  # per task; with loss targets, the most passes per task
    batch_size: int = 32
    shuffle: bool = True
    model: str = "mlp"
    eval_train: bool = False  # the paper evaluates on the training sets
    name: str = "study"
    train_eval_mode: str = "eval"  # "train": the training split is evaluated in training mode
    # Train each task in whole passes until the last batch's loss is below its target
    # (per task). The published text script's target for the second task depends on the
    # optimizer: method name -> targets.
    loss_targets: dict[str, tuple[float, ...]] | None = None
    # Train each task for exactly this many steps (batches), reshuffling at every pass
    # through its data (van de Ven et al. count iterations, not epochs); None: epochs.
    iterations: tuple[int, ...] | None = None


@dataclass
class TaskSequence:
    name: str
    tasks: list[Task]
    input: InputShape
    protocol: TrainingProtocol
    notes: list[str] = field(default_factory=list)  # e.g. "MNIST train stands in ..."
    # "task", "domain" or "class" incremental (classp.scenarios): split sequences take any of
    # the three; permuted ones and the paper's pairs share one head and their labels (domain).
    scenario: str = "domain"

    def to(self, device) -> TaskSequence:
        return self.with_tasks([t.to(device) for t in self.tasks])

    def with_tasks(self, tasks: list[Task]) -> TaskSequence:
        return TaskSequence(self.name, tasks, self.input, self.protocol, self.notes, self.scenario)


def carve_validation(x: Tensor, y: Tensor, fraction: float, seed: int = 0) -> tuple[Split, Split]:
    """Split a training set into train and validation with a fixed permutation, so every
    run and every trial sees the same validation set. A fraction of 0 keeps the whole
    training set, in its order, and an empty validation split."""
    n = int(y.shape[0])
    if fraction <= 0:
        return Split(x, y), Split(x[:0], y[:0])
    n_val = max(1, int(round(n * fraction)))
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    val, train = order[:n_val], order[n_val:]
    return Split(x[train], y[train]), Split(x[val], y[val])


def subsample_split(split: Split, fraction: float, seed: int = 0) -> Split:
    """The first `fraction` of a fixed permutation (at least one sample)."""
    if fraction >= 1.0:
        return split
    n = len(split)
    keep = max(1, int(round(n * fraction)))
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:keep]
    return split.subset(order.sort().values)  # keep the original order (no-shuffle protocols)


def subsample_task(task: Task, fraction: float) -> Task:
    return task.with_splits(lambda split: subsample_split(split, fraction))


def split_by_classes(task: Task, groups: list[tuple[int, ...]], prefix: str) -> list[Task]:
    """One task per group of classes, labels kept (classp.scenarios maps them per scenario)."""
    out = []
    for group in groups:
        wanted = torch.tensor(group)

        def pick(split: Split, wanted=wanted) -> Split:
            return split.subset(torch.isin(split.y, wanted).nonzero().squeeze(1))

        out.append(Task(f"{prefix}{''.join(map(str, group))}", pick(task.train),
                        pick(task.val), pick(task.test), tuple(group)))
    return out


def permuted_tasks(task: Task, n_tasks: int, prefix: str, seed: int = 0) -> list[Task]:
    """Task 1 is the original; task k > 1 applies a fixed pixel permutation to every image."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for k in range(n_tasks):
        n_pixels = task.train.x[0].numel()
        perm = torch.arange(n_pixels) if k == 0 else torch.randperm(n_pixels, generator=gen)

        def permute(split: Split, perm=perm) -> Split:
            flat = split.x.reshape(len(split), len(perm))[:, perm]  # an empty split too
            return Split(flat.reshape(split.x.shape), split.y)

        out.append(Task(f"{prefix}{k + 1}", permute(task.train), permute(task.val),
                        permute(task.test)))
    return out
