"""Final accuracy per task (the paper's Table 1 as a chart): `_get_table1_info` computes
the panel's numbers (tested without a browser), `draw` only draws them."""

from __future__ import annotations

from typing import NamedTuple

from classp.dashboards._common import CI_LEGEND, finished, mean_ci
from classp.dashboards._plotly import go
from classp.dashboards.runs import ExperimentRuns
from classp.paper import PUBLISHED_SPLIT, published

TITLE = "Final accuracy per task"
RUNS = "confirm"  # the runs it reads: confirmation runs or study trials

class Table1Info(NamedTuple):
    tasks: list[str]
    methods: list[str]
    mean: dict[str, list[float]]  # method -> per task, in %
    minus: dict[str, list[float]]  # the 95% CI below and above the mean (error bars)
    plus: dict[str, list[float]]
    runs: dict[str, int]
    published: dict[str, dict[str, tuple[float, float | None]]]  # method -> task -> (mean, std)
    published_split: str
    missing: list[str]  # methods without confirmation runs


def _get_table1_info(exp: ExperimentRuns, methods: list[str], split: str) -> Table1Info | None:
    mean, minus, plus, runs, missing, tasks = {}, {}, {}, {}, [], []
    for m in methods:
        done = [r for r in finished(exp.of("confirm", m)) if r.final_accuracies(split)]
        if not done:
            missing.append(m)
            continue
        tasks = tasks or done[0].tasks
        per_task = list(zip(*(r.final_accuracies(split) for r in done)))
        bars = [mean_ci([100 * v for v in column]) for column in per_task]
        mean[m], minus[m], plus[m] = ([b[i] for b in bars] for i in range(3))
        runs[m] = len(done)
    if not mean:
        return None
    return Table1Info(tasks, [m for m in methods if m in mean], mean, minus, plus, runs,
                      {m: published(exp.sequence, m) for m in methods if published(exp.sequence, m)},
                      PUBLISHED_SPLIT, missing)


def draw(info: Table1Info, split: str):
    fig = go.Figure()
    for m in info.methods:
        fig.add_trace(go.Bar(name=f"{m} (ours, {split}, n={info.runs[m]}; 95% CI)", x=info.tasks,
                             y=info.mean[m], error_y=dict(type="data", symmetric=False,
                                                          array=info.plus[m], arrayminus=info.minus[m])))
    for m, per_task in info.published.items():
        tasks = [t for t in info.tasks if t in per_task]
        fig.add_trace(go.Bar(
            name=f"{m} (paper, {info.published_split} sets, mean ± std of 10 runs)", x=tasks,
            y=[per_task[t][0] for t in tasks],
            error_y=dict(type="data", array=[per_task[t][1] or 0 for t in tasks]),
            marker_pattern_shape="/", opacity=0.6))
    fig.update_layout(barmode="group", yaxis_title="final accuracy (%)", xaxis_title="task",
                      yaxis_range=[0, 100],
                      title=f"Final accuracy per task after the last task; {CI_LEGEND}")
    return fig
