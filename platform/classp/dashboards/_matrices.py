"""Accuracy matrices: `_get_matrices_info` computes the panel's numbers (tested without a
browser), `draw` only draws them."""

from __future__ import annotations

import statistics
from typing import NamedTuple

from classp.dashboards._common import finished
from classp.dashboards._plotly import go, make_subplots
from classp.dashboards.runs import ExperimentRuns

TITLE = "Accuracy matrices"
RUNS = "confirm"  # the runs it reads: confirmation runs or study trials

class MatricesInfo(NamedTuple):
    tasks: list[str]
    matrices: dict[str, list[list[float]]]  # method -> mean R (rows: before, after task i)
    runs: dict[str, int]
    missing: list[str]


def _get_matrices_info(exp: ExperimentRuns, methods: list[str], split: str) -> MatricesInfo | None:
    matrices, runs, missing, tasks = {}, {}, [], []
    for m in methods:
        found = []
        for r in finished(exp.of("confirm", m)):
            doc = exp.artifact_json(r.run_id, "accuracy_matrix.json")
            if doc and split in doc.get("splits", {}):
                found.append(doc["splits"][split])
                tasks = tasks or doc["tasks"]
        if not found:
            missing.append(m)
            continue
        matrices[m] = [[statistics.fmean(cells) for cells in zip(*rows)] for rows in zip(*found)]
        runs[m] = len(found)
    return MatricesInfo(tasks, matrices, runs, missing) if matrices else None


def draw(info: MatricesInfo):
    methods = list(info.matrices)
    fig = make_subplots(rows=1, cols=len(methods), subplot_titles=[
        f"{m} (n={info.runs[m]})" for m in methods], horizontal_spacing=0.08)
    rows = ["before"] + [f"after {t}" for t in info.tasks]
    for i, m in enumerate(methods):
        R = info.matrices[m]
        fig.add_trace(go.Heatmap(z=[[100 * v for v in row] for row in R], x=info.tasks, y=rows,
                                 zmin=0, zmax=100, colorscale="Viridis", showscale=i == len(methods) - 1,
                                 text=[[f"{100 * v:.0f}" for v in row] for row in R],
                                 texttemplate="%{text}", colorbar=dict(title="%")), row=1, col=i + 1)
        fig.update_yaxes(autorange="reversed", row=1, col=i + 1)
    fig.update_layout(title="Accuracy matrix R (row: after training task; column: task), mean "
                            "over confirmation seeds", height=420)
    return fig
