"""Old-task against new-task accuracy, with Pareto fronts: `_get_pareto_info` computes the
panel's numbers (tested without a browser), `draw` only draws them."""

from __future__ import annotations

from typing import NamedTuple

from classp import metrics
from classp.colours import colour
from classp.dashboards._common import finished
from classp.dashboards._plotly import go
from classp.dashboards.runs import ExperimentRuns

TITLE = "Old against new task"
RUNS = "trial"  # the runs it reads: confirmation runs or study trials

class ParetoInfo(NamedTuple):
    points: dict[str, list[tuple[float, float, int]]]  # method -> (old, new, trial)
    fronts: dict[str, list[tuple[float, float, int]]]
    missing: list[str]


def pareto_front(points: list[tuple[float, float, int]]) -> list[tuple[float, float, int]]:
    """The points no other point beats on both old- and new-task accuracy, by old."""
    front = [p for p in points if not any(
        q[0] >= p[0] and q[1] >= p[1] and (q[0] > p[0] or q[1] > p[1]) for q in points)]
    return sorted(front)


def _get_pareto_info(exp: ExperimentRuns, methods: list[str], split: str = "val") -> ParetoInfo | None:
    points, fronts, missing = {}, {}, []
    for m in methods:
        pts = []
        for r in finished(exp.of("trial", m)):
            finals = r.final_accuracies(split)
            if finals and len(finals) > 1:
                pts.append((metrics.old_task_accuracy(finals), metrics.new_task_accuracy(finals), r.trial))
        if not pts:
            missing.append(m)
            continue
        points[m], fronts[m] = pts, pareto_front(pts)
    return ParetoInfo(points, fronts, missing) if points else None


def draw(info: ParetoInfo):
    fig = go.Figure()
    for i, (m, pts) in enumerate(info.points.items()):
        shade = colour(i)
        fig.add_trace(go.Scatter(x=[100 * p[0] for p in pts], y=[100 * p[1] for p in pts],
                                 mode="markers", name=f"{m} trials", marker=dict(color=shade, opacity=0.5),
                                 text=[f"trial {p[2]}" for p in pts]))
        front = info.fronts[m]
        fig.add_trace(go.Scatter(x=[100 * p[0] for p in front], y=[100 * p[1] for p in front],
                                 mode="lines+markers", name=f"{m} Pareto front",
                                 line=dict(color=shade), marker=dict(size=9)))
    fig.update_layout(xaxis_title="old tasks: mean final accuracy (%)",
                      yaxis_title="new (last) task: final accuracy (%)",
                      title="Every trial: remembering against learning (validation split)")
    return fig
