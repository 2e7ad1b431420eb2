"""Optimisation history: `_get_history_info` computes the panel's numbers (tested without a
browser), `draw` only draws them."""

from __future__ import annotations

from typing import NamedTuple

from classp.colours import colour
from classp.dashboards._plotly import go
from classp.dashboards.runs import ExperimentRuns

TITLE = "Optimisation history"
RUNS = "trial"  # the runs it reads: confirmation runs or study trials

class HistoryInfo(NamedTuple):
    objective: str
    values: dict[str, list[tuple[int, float]]]  # method -> (trial, value), finished trials
    best: dict[str, list[tuple[int, float]]]  # method -> running best
    missing: list[str]


def _get_history_info(exp: ExperimentRuns, methods: list[str]) -> HistoryInfo | None:
    values, best, missing, objective = {}, {}, [], ""
    for m in methods:
        pts = []
        for r in exp.of("trial", m, "finished"):
            keys = sorted(k for k in r.metrics if k.startswith("objective."))
            if keys and r.trial is not None:
                objective = objective or keys[0]
                pts.append((r.trial, r.metrics[keys[0]]))
        if not pts:
            missing.append(m)
            continue
        pts.sort()
        running, top = [], float("-inf")
        for trial, v in pts:
            top = max(top, v)
            running.append((trial, top))
        values[m], best[m] = pts, running
    if not values:
        return None
    return HistoryInfo(objective.removeprefix("objective."), values, best, missing)


def draw(info: HistoryInfo):
    fig = go.Figure()
    for i, m in enumerate(info.values):
        shade = colour(i)
        fig.add_trace(go.Scatter(x=[p[0] for p in info.values[m]], y=[p[1] for p in info.values[m]],
                                 mode="markers", name=f"{m}", marker=dict(color=shade)))
        fig.add_trace(go.Scatter(x=[p[0] for p in info.best[m]], y=[p[1] for p in info.best[m]],
                                 mode="lines", name=f"{m} best so far", line=dict(color=shade, shape="hv")))
    fig.update_layout(xaxis_title="trial", yaxis_title=info.objective,
                      title="Optimisation history per study (finished trials)")
    return fig
