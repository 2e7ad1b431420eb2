"""What `classp study confirm` prints and logs: per method mean, std, n and a 95% interval
over the confirmation seeds; the CLASSP-vs-EWC verdict, CLASSP against every other method
and against the best baseline, each paired by seed; which methods sit at chance; and what
CLASSP's chosen settings are when they make it another method.

The quantity a verdict is about is the old-task accuracy: the mean final test accuracy on
every task but the last (`metrics.old_task_accuracy`), which is what "keeps old tasks" means.
The best baseline is the one whose study's best trial scored highest on the tuning
objective (validation data, fixed before any confirmation run), never the one that did
best on the confirmation seeds: picking the winner on the numbers it is then judged by
would flatter it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from classp import chance, metrics, stats

VERDICT_PAIR = ("classp", "ewc")
# Not baselines: joint training sees every task's data at once (an upper bound, not a
# continual learner), and CLASSP is what is being judged.
NOT_BASELINES = frozenset({"classp", "joint"})


@dataclass
class MethodOutcome:
    """One method's confirmation runs: the final row of R per seed, and the diverged seeds."""

    finals: dict[int, list[float]] = field(default_factory=dict)  # seed -> final accuracies (0-1)
    diverged: list[int] = field(default_factory=list)
    learned: dict[int, float] = field(default_factory=dict)  # seed -> learning accuracy (0-1)
    chances: list[float] = field(default_factory=list)  # per task, the chance level (0-1)

    def add(self, seed: int, matrix: list[list[float]], chances: list[float], first: int = 0) -> None:
        """One finished run: its accuracy matrix on the reported split, of which the tasks
        from index `first` on are reported (the earlier ones tuned the hyperparameters)."""
        reported = metrics.reported_tasks(matrix, first)
        self.finals[seed] = list(reported[-1])
        self.learned[seed] = metrics.learning_accuracy(reported)
        self.chances = list(chances[first:])

    @property
    def at_chance(self) -> bool:
        """Whether the mean learning accuracy over the seeds is at chance."""
        return bool(self.learned) and chance.at_chance(
            sum(self.learned.values()) / len(self.learned), self.chances)

    def chance_warning(self, method: str) -> str:
        return chance.chance_warning(method, sum(self.learned.values()) / len(self.learned),
                                     self.chances)

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
        if outcome.at_chance:
            cells[0] += " (at chance)"
        rows.append(cells)
    widths = [max(len(r[c]) for r in [header, *rows] if c < len(r)) for c in range(len(header))]
    lines = [f"{name}: {split} accuracy (%) after the last task, n={len(seeds)} confirmation seeds "
             f"({_seeds_text(seeds)}, never used in tuning)",
             "per task: mean ± std over seeds; old tasks (all but the last) and all tasks: "
             "mean ± std [95% bootstrap CI of the mean]",
             "  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip()]
    for r in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    lines += [f"warning: {outcome.chance_warning(method)}"
              for method, outcome in outcomes.items() if outcome.at_chance]
    return "\n".join(lines)


def compare(outcomes: dict[str, MethodOutcome], a: str = VERDICT_PAIR[0],
            b: str = VERDICT_PAIR[1]) -> stats.Paired | None:
    """a - b in old-task accuracy (points), paired by seed; None if either is missing."""
    if a not in outcomes or b not in outcomes:
        return None
    return stats.paired_difference(outcomes[a].per_seed(metrics.old_task_accuracy),
                                   outcomes[b].per_seed(metrics.old_task_accuracy), a, b)


def best_baseline(tuning_scores: dict[str, float]) -> str | None:
    """The baseline whose study's best trial scored highest on the tuning objective."""
    baselines = {m: v for m, v in tuning_scores.items() if m not in NOT_BASELINES}
    return max(baselines, key=baselines.get) if baselines else None


def _difference_text(paired: stats.Paired) -> str:
    d = paired.difference
    text = f"{paired.a} - {paired.b} = {d.mean:+.2f} points"
    if d.n >= 2:
        text += f", 95% CI [{d.low:+.2f}, {d.high:+.2f}], n={d.n}"
    return text


def verdict_sentence(paired: stats.Paired, outcomes: dict[str, MethodOutcome]) -> str:
    """The sentence to quote for one comparison, or why there is none: no verdict is drawn
    with a method at chance."""
    failed = [m for m in (paired.a, paired.b) if m in outcomes and outcomes[m].at_chance]
    if failed:
        return (f"none; {failed[0]} is at chance (see the warning above), which is a failed "
                f"run to fix, not a result to beat")
    return stats.verdict(paired)


def _headline(paired: stats.Paired, outcomes: dict[str, MethodOutcome], title: str) -> list[str]:
    """The heading line of one comparison and its verdict, or why there is none."""
    head = f"{title} (old-task accuracy, paired by seed): {_difference_text(paired)}"
    return [head, "verdict: " + verdict_sentence(paired, outcomes)]


def verdict_lines(outcomes: dict[str, MethodOutcome], tuning_scores: dict[str, float],
                  objective: str, chosen: dict[str, str] | None = None,
                  a: str = VERDICT_PAIR[0]) -> list[str]:
    """The verdicts: CLASSP vs EWC; CLASSP against every other method; CLASSP against the
    best baseline by the tuning objective; and, when CLASSP's chosen settings make it
    another method, that method's name (`chosen`: method -> what its settings are)."""
    if a not in outcomes or not outcomes[a].finals:
        return []
    lines = []
    paired = compare(outcomes, a, VERDICT_PAIR[1])
    if paired is not None and outcomes[VERDICT_PAIR[1]].finals:
        lines += _headline(paired, outcomes, f"{a.upper()} vs {VERDICT_PAIR[1].upper()}")
    others = [m for m in outcomes if m != a and outcomes[m].finals]
    if others and others != [VERDICT_PAIR[1]]:  # more than the headline's comparison
        lines.append(f"{a} against each method (old-task accuracy, paired by seed; 95% t-intervals "
                     f"each on its own, not adjusted for the {len(others)} comparisons):")
        for m in others:
            p = compare(outcomes, a, m)
            if outcomes[m].at_chance:
                lines.append(f"  {_difference_text(p)}: no verdict, {m} is at chance")
                continue
            lines.append(f"  {_difference_text(p)}"
                         + (f", p={p.p_value:.2g}" if p.n >= 2 else "") + ": "
                         + ("no difference detectable" if not p.detectable or p.n < 2 else
                            f"{a if p.difference.mean > 0 else m} keeps old tasks better"))
    best = best_baseline({m: v for m, v in tuning_scores.items() if m in outcomes})
    if best is not None and outcomes[best].finals:
        ranked = sorted((m for m in tuning_scores if m not in NOT_BASELINES and m in outcomes),
                        key=tuning_scores.get, reverse=True)
        scores = ", ".join(f"{m} {100 * tuning_scores[m]:.2f}%" for m in ranked)
        lines.append(f"best baseline: {best}, chosen by the tuning objective ({objective} of each "
                     f"study's best trial, fixed before any confirmation run: {scores})")
        if best == VERDICT_PAIR[1] and paired is not None:
            lines[-1] += f"; its verdict is the {a.upper()} vs {best.upper()} one above"
        else:
            lines += _headline(compare(outcomes, a, best), outcomes,
                               f"{a.upper()} vs the best baseline, {best.upper()}")
    for method, what in (chosen or {}).items():
        lines.append(f"note: {method}'s chosen settings are {what}; every {method} number above "
                     f"is that method's, not {method.upper()}'s thresholding")
    return lines
