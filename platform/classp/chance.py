"""Chance level: when a method's number is not a result but a run that learnt nothing.

A baseline whose runs diverge or never learn (SI with steps too large for its penalty, say)
still gets an accuracy, and a verdict against it would be empty. The check is on the
learning accuracy (each task right after training it, `metrics.learning_accuracy`), not on
the final accuracy: forgetting old tasks, down to zero in the class-incremental scenario,
is what the field measures; not learning the task just trained is a defect of the run.

Chance is a uniform guess among the classes the evaluation reads (`InputShape.num_classes`:
ten on digits and class-incremental split MNIST, two per head task-incremental, two
domain-incremental, three on Financial PhraseBank). Not the commonest class's share: a
strongly regularised method in the class-incremental scenario answers a new task's inputs
with old classes and learns the new task to below what always answering its commonest
class would score; that is the intransigence the field measures, not a broken run, and a
verdict against it is a result. (The price: a text model stuck on Financial PhraseBank's
commonest class, 59%, is not flagged against a chance of 33%.)
"""

from __future__ import annotations

from collections.abc import Sequence

# A method is "at chance" when its learning accuracy has covered less than this share of
# the way from chance to 100%: 28% on ten classes, 60% on two. Every working method on
# the platform's sequences learns its current task far above that (90% and more on the
# quick start's and split MNIST's); the quick start's failed SI (steps too large for its
# penalty) learnt its ten-class tasks to about 20%.
CHANCE_MARGIN = 0.2


def chance_levels(sequence) -> list[float]:
    """Per task of the sequence, the accuracy of a uniform guess among its classes."""
    return [1 / sequence.input.num_classes] * len(sequence.tasks)


def threshold(chance: float) -> float:
    """The learning accuracy below which a method is at chance."""
    return chance + CHANCE_MARGIN * (1 - chance)


def at_chance(learned: float, chances: Sequence[float]) -> bool:
    """Whether a learning accuracy (0-1, mean over tasks) is at chance for these tasks."""
    return learned < threshold(sum(chances) / len(chances))


def chance_warning(method: str, learned: float, chances: Sequence[float]) -> str:
    """What a study and a confirmation say of a method at chance (one sentence)."""
    chance = sum(chances) / len(chances)
    return (f"{method} is at chance: it learns its tasks to {100 * learned:.1f}% right after "
            f"training each (a uniform guess among {round(1 / chance)} classes scores "
            f"{100 * chance:.1f}%; below {100 * threshold(chance):.1f}% counts as not learning), "
            f"so its numbers say nothing about forgetting and no verdict is drawn with it; "
            f"widen or move its search (its lr first) and rerun its study")
