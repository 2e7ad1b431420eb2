"""Memory kept across tasks: `_get_memory_info` computes the panel's numbers (tested
without a browser), `draw` only draws them."""

from __future__ import annotations

import statistics
from typing import NamedTuple

from classp.dashboards._common import finished
from classp.dashboards._plotly import go
from classp.dashboards.runs import ExperimentRuns

TITLE = "Memory kept across tasks"
RUNS = "trial"  # the runs it reads: confirmation runs or study trials

class MemoryInfo(NamedTuple):
    methods: list[str]
    state_bytes: dict[str, float]
    missing: list[str]


def _get_memory_info(exp: ExperimentRuns, methods: list[str]) -> MemoryInfo | None:
    state, missing = {}, []
    for m in methods:
        values = [r.metrics["state_bytes"] for r in finished(exp.of("confirm", m) or exp.of("trial", m))
                  if "state_bytes" in r.metrics]
        if not values:
            missing.append(m)
            continue
        state[m] = statistics.median(values)
    return MemoryInfo(list(state), state, missing) if state else None


def draw(info: MemoryInfo):
    fig = go.Figure(go.Bar(x=info.methods, y=[info.state_bytes[m] / 1e6 for m in info.methods],
                           text=[f"{info.state_bytes[m] / 1e6:.2f} MB" for m in info.methods],
                           textposition="outside"))
    fig.update_layout(yaxis_title="MB kept across tasks",
                      title="Memory each method keeps across tasks (measured from its tensors)")
    return fig
