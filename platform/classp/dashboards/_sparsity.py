"""Update-sparsity histograms, side by side: `_get_sparsity_info` computes the panel's
numbers (tested without a browser), `draw` only draws them."""

from __future__ import annotations

from typing import NamedTuple

from classp.colours import colour
from classp.dashboards._plotly import go, make_subplots
from classp.dashboards.runs import ExperimentRuns

TITLE = "Update sparsity"
RUNS = "trial"  # the runs it reads: confirmation runs or study trials

class SparsityInfo(NamedTuple):
    params: list[str]
    # method -> parameter -> (bin centres as a share of steps, share of weights)
    histograms: dict[str, dict[str, tuple[list[float], list[float]]]]
    source: dict[str, str]  # method -> which run
    missing: list[str]


def _get_sparsity_info(exp: ExperimentRuns, methods: list[str]) -> SparsityInfo | None:
    """Per method, the best finished trial's histograms, summed over tasks."""
    histograms, source, missing, params = {}, {}, [], []
    for m in methods:
        trials = [r for r in exp.of("trial", m, "finished") if any(k.startswith("objective.") for k in r.metrics)]
        doc, best = None, None
        for r in sorted(trials, key=lambda r: -max(v for k, v in r.metrics.items() if k.startswith("objective."))):
            doc = exp.artifact_json(r.run_id, "sparsity/update_histograms.json")
            if doc:
                best = r
                break
        if not doc:
            missing.append(m)
            continue
        per_param = {}
        for name in doc["tasks"][0]["params"]:
            centres, shares = _combine_tasks([t["params"][name] for t in doc["tasks"]])
            per_param[name] = (centres, shares)
        params = params or list(per_param)
        histograms[m], source[m] = per_param, f"trial {best.trial}"
    return SparsityInfo(params, histograms, source, missing) if histograms else None


def _combine_tasks(hists: list[dict], bins: int = 10) -> tuple[list[float], list[float]]:
    """Re-bin each task's histogram on the share of its steps, then pool the tasks."""
    totals = [0.0] * bins
    numel = 0
    for h in hists:
        numel += h["numel"]
        for (lo, hi), count in zip(zip(h["edges"][:-1], h["edges"][1:]), h["counts"]):
            share = min(max((lo + hi) / 2 / h["steps"], 0.0), 1.0)
            totals[min(int(share * bins), bins - 1)] += count
    centres = [(i + 0.5) / bins for i in range(bins)]
    return centres, [t / numel for t in totals]


def draw(info: SparsityInfo):
    cols = min(3, len(info.params))
    rows = -(-len(info.params) // cols)
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=info.params)
    for i, m in enumerate(info.histograms):
        for k, name in enumerate(info.params):
            if name not in info.histograms[m]:
                continue
            centres, shares = info.histograms[m][name]
            fig.add_trace(go.Bar(x=centres, y=shares, name=f"{m} ({info.source[m]})", legendgroup=m,
                                 showlegend=k == 0, marker_color=colour(i)),
                          row=k // cols + 1, col=k % cols + 1)
    fig.update_layout(barmode="group", height=300 * rows + 100,
                      title="Per-weight update counts: share of each task's steps that moved a "
                            "weight (all tasks pooled)")
    fig.update_xaxes(range=[0, 1])
    return fig
