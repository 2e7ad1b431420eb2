"""Forgetting and backward transfer: `_get_forgetting_info` computes the panel's numbers
(tested without a browser), `draw` only draws them."""

from __future__ import annotations

from typing import NamedTuple

from classp.dashboards._common import CI_LEGEND, finished, mean_ci
from classp.dashboards._plotly import go
from classp.dashboards.runs import ExperimentRuns

TITLE = "Forgetting and BWT"
RUNS = "confirm"  # the runs it reads: confirmation runs or study trials

class ForgettingInfo(NamedTuple):
    methods: list[str]
    forgetting: dict[str, tuple[float, float, float]]  # mean, CI minus, CI plus (points)
    bwt: dict[str, tuple[float, float, float]]
    missing: list[str]


def _get_forgetting_info(exp: ExperimentRuns, methods: list[str], split: str) -> ForgettingInfo | None:
    forgetting, bwt, missing = {}, {}, []
    for m in methods:
        done = [r for r in finished(exp.of("confirm", m)) if f"{split}.bwt" in r.metrics]
        if not done:
            missing.append(m)
            continue
        forgetting[m] = mean_ci([100 * r.metrics[f"{split}.forgetting"] for r in done])
        bwt[m] = mean_ci([100 * r.metrics[f"{split}.bwt"] for r in done])
    if not forgetting:
        return None
    return ForgettingInfo(list(forgetting), forgetting, bwt, missing)


def draw(info: ForgettingInfo):
    fig = go.Figure()
    for label, values in (("forgetting", info.forgetting), ("BWT", info.bwt)):
        fig.add_trace(go.Bar(name=f"{label} (95% CI)", x=info.methods,
                             y=[values[m][0] for m in info.methods],
                             error_y=dict(type="data", symmetric=False,
                                          array=[values[m][2] for m in info.methods],
                                          arrayminus=[values[m][1] for m in info.methods])))
    fig.update_layout(barmode="group", yaxis_title="accuracy points (%)",
                      title=f"Forgetting (lower is better) and backward transfer (higher is better); {CI_LEGEND}")
    return fig
