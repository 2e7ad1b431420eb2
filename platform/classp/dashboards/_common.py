"""What several panels share: finished runs, and the error bars of a mean."""


from __future__ import annotations

from classp import stats
from classp.dashboards.runs import RunRecord

CI_LEGEND = "error bars: 95% bootstrap CI of the mean over the confirmation seeds"


def mean_ci(values: list[float]) -> tuple[float, float, float]:
    """(mean, minus, plus): the error bar of a bootstrap 95% CI, which stays inside the
    range of the values (so within [0, 100] for accuracies)."""
    s = stats.summarize(values)
    if s.n < 2:
        return s.mean, 0.0, 0.0
    return s.mean, s.mean - s.low, s.high - s.mean


def finished(runs: list[RunRecord]) -> list[RunRecord]:
    return [r for r in runs if r.state == "finished"]


