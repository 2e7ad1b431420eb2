"""What `classp study confirm` prints and logs: per method mean, std, n and a 95% interval
over the confirmation seeds, and the CLASSP-vs-EWC verdict, paired by seed.

The quantity a verdict is about is the old-task accuracy: the mean final test accuracy on
every task but the last (`metrics.old_task_accuracy`), which is what "keeps old tasks" means.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from classp import metrics, stats

VERDICT_PAIR = ("classp", "ewc")


@dataclass
class MethodOutcome:
    """One method's confirmation runs: the final row of R per seed, and the diverged seeds."""

    finals: dict[int, list[float]] = field(default_factory=dict)  # seed -> final accuracies (0-1)
    diverged: list[int] = field(default_factory=list)

    def per_seed(self, quantity) -> dict[int, float]:
        """seed -> 100 * quantity(final row), e.g. metrics.old_task_accuracy."""
        return {seed: 100 * quantity(final) for seed, final in self.finals.items()}

    def task(self, j: int) -> stats.Summary:
        return stats.summarize([100 * f[j] for f in self.finals.values()])

    @property
    def old(self) -> stats.Summary:
        return stats.summarize(list(self.per_seed(metrics.old_task_accuracy).values()))

    @property
    def mean(self) -> stats.Summary:
        return stats.summarize(list(self.per_seed(metrics.mean_accuracy).values()))


def _seeds_text(seeds) -> str:
    seeds = sorted(seeds)
    if seeds == list(range(seeds[0], seeds[-1] + 1)) and len(seeds) > 2:
        return f"{seeds[0]}-{seeds[-1]}"
    return ", ".join(map(str, seeds))


def format_table(name: str, split: str, seeds, tasks: list[str],
                 outcomes: dict[str, MethodOutcome]) -> str:
    header = ["method", *tasks, "old tasks", "all tasks"]
    rows = []
    for method, outcome in outcomes.items():
        if not outcome.finals:
            rows.append([method, f"every confirmation run diverged ({len(outcome.diverged)})"])
            continue
        cells = [method]
        cells += [f"{s.mean:.2f} ± {s.std:.2f}" if s.n > 1 else f"{s.mean:.2f}"
                  for s in (outcome.task(j) for j in range(len(tasks)))]
        cells += [outcome.old.short(), outcome.mean.short()]
        if outcome.diverged:
            cells[0] += f" ({len(outcome.diverged)} of {len(outcome.diverged) + len(outcome.finals)} diverged)"
        rows.append(cells)
    widths = [max(len(r[c]) for r in [header, *rows] if c < len(r)) for c in range(len(header))]
    lines = [f"{name}: {split} accuracy (%) after the last task, n={len(seeds)} confirmation seeds "
             f"({_seeds_text(seeds)}, never used in tuning)",
             "per task: mean ± std over seeds; old tasks (all but the last) and all tasks: "
             "mean ± std [95% bootstrap CI of the mean]",
             "  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip()]
    for r in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    return "\n".join(lines)


def compare(outcomes: dict[str, MethodOutcome], a: str = VERDICT_PAIR[0],
            b: str = VERDICT_PAIR[1]) -> stats.Paired | None:
    """a - b in old-task accuracy (points), paired by seed; None if either is missing."""
    if a not in outcomes or b not in outcomes:
        return None
    return stats.paired_difference(outcomes[a].per_seed(metrics.old_task_accuracy),
                                   outcomes[b].per_seed(metrics.old_task_accuracy), a, b)


def verdict_lines(paired: stats.Paired | None) -> list[str]:
    if paired is None:
        return []
    d = paired.difference
    head = (f"{paired.a.upper()} vs {paired.b.upper()} (old-task accuracy, paired by seed): "
            f"{paired.a} - {paired.b} = {d.mean:+.2f} points")
    if d.n >= 2:
        head += f", 95% CI [{d.low:+.2f}, {d.high:+.2f}], n={d.n}"
    return [head, "verdict: " + stats.verdict(paired)]
