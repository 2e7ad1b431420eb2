"""Continual-learning metrics as pure functions of the accuracy matrix.

R has T+1 rows and T columns: R[0][j] is the accuracy on task j before any training and
R[i][j] the accuracy on task j after training task i (1-based rows, 0-based columns,
as in Avalanche's evaluation/functional.py).
"""

from __future__ import annotations

from collections.abc import Sequence

Matrix = Sequence[Sequence[float]]


def _check(R: Matrix) -> int:
    T = len(R[0]) if R else 0
    if T == 0 or len(R) != T + 1 or any(len(row) != T for row in R):
        raise ValueError("the accuracy matrix must have T+1 rows of T columns (T >= 1)")
    return T


def acc(R: Matrix) -> float:
    """Average accuracy over all tasks after the last task: mean_j R[T][j]."""
    T = _check(R)
    return sum(R[T]) / T


def bwt(R: Matrix) -> float:
    """Backward transfer: mean_{j<T} (R[T][j] - R[j][j]); negative means forgetting."""
    T = _check(R)
    if T == 1:
        return 0.0
    return sum(R[T][j] - R[j + 1][j] for j in range(T - 1)) / (T - 1)


def forgetting(R: Matrix) -> list[float]:
    """Per task j < T: max_{l<T} R[l][j] - R[T][j], the best accuracy reached on task j
    after learning it, minus the final (Chaudhry et al. 2018)."""
    T = _check(R)
    return [max(R[row][j] for row in range(j + 1, T)) - R[T][j] for j in range(T - 1)]


def mean_forgetting(R: Matrix) -> float:
    f = forgetting(R)
    return sum(f) / len(f) if f else 0.0


def fwt(R: Matrix) -> float:
    """Forward transfer: mean_{j>1} (R[j-1][j] - R[0][j]), the accuracy on a task before
    training it, over the untrained model's."""
    T = _check(R)
    if T == 1:
        return 0.0
    return sum(R[j][j] - R[0][j] for j in range(1, T)) / (T - 1)


def learning_accuracy(R: Matrix) -> float:
    """Mean over tasks of R[j][j] (1-based rows): each task's accuracy right after training
    it, before anything later could make the model forget it (Riemer et al. 2019). A method
    whose learning accuracy sits at chance did not learn its tasks at all."""
    T = _check(R)
    return sum(R[j + 1][j] for j in range(T)) / T


def reported_tasks(R: Matrix, first: int) -> list[list[float]]:
    """The accuracy matrix of the tasks from index `first` on, as if the run had started
    there: row 0 the accuracy before training any of them (after task `first`, 1-based row
    `first`), then the rows after each of them. `first` = 0 gives R itself."""
    T = _check(R)
    if not 0 <= first < T:
        raise ValueError(f"first reported task {first} is outside 0..{T - 1}")
    return [list(row[first:]) for row in [R[first], *R[first + 1:]]]


def final_accuracy(R: Matrix) -> list[float]:
    T = _check(R)
    return list(R[T])


def old_task_accuracy(final: list[float]) -> float:
    """Mean final accuracy on the tasks before the last (what a method kept); with a
    single task, that task's accuracy."""
    return sum(final[:-1]) / (len(final) - 1) if len(final) > 1 else final[0]


def new_task_accuracy(final: list[float]) -> float:
    """Final accuracy on the last task (what a method learnt last)."""
    return final[-1]


def mean_accuracy(final: list[float]) -> float:
    """Mean final accuracy over every task (ACC of the final row)."""
    return sum(final) / len(final)


def summary(R: Matrix) -> dict[str, float]:
    """All scalar metrics, named as they are logged."""
    out = {"acc": acc(R), "bwt": bwt(R), "forgetting": mean_forgetting(R), "fwt": fwt(R),
           "learning_acc": learning_accuracy(R)}
    for j, a in enumerate(final_accuracy(R)):
        out[f"final_acc_task{j + 1}"] = a
    return out
