"""The verdict: CLASSP against EWC, every other method and the best baseline:
`_get_verdict_info` computes the panel's numbers (tested without a browser), `draw` only
draws them."""

from __future__ import annotations

from typing import NamedTuple

from classp import metrics, stats
from classp.colours import colour
from classp.confirmation import VERDICT_PAIR, MethodOutcome, verdict_lines, verdict_sentence
from classp.dashboards._common import finished
from classp.dashboards._plotly import go
from classp.dashboards.runs import ExperimentRuns, RunRecord
from classp.paper import PUBLISHED_SPLIT, published
from classp.tracking import TAG_REDUCES_TO
from classp.tuning_protocols import Tuning

TITLE = "Verdict: CLASSP against EWC, each method and the best baseline"
RUNS = "confirm"  # the runs it reads: confirmation runs or study trials

class VerdictInfo(NamedTuple):
    paired: stats.Paired  # a - b in old-task accuracy (points), paired by confirmation seed
    sentence: str
    paper: tuple[float, float, str] | None  # (CLASSP mean, EWC mean, the task) as published
    split: str
    against: list[stats.Paired]  # CLASSP minus each other method with confirmation runs
    lines: list[str]  # what `classp study confirm` prints below its table, from these runs
    tuning: str | None = None  # the line confirm opens with: which protocol chose the settings


def _per_seed_old_accuracy(runs: list[RunRecord], split: str) -> dict[int, float]:
    out = {}
    for r in finished(runs):
        final = r.reported_finals(split)
        if final and "confirm_seed" in r.params:
            out[int(r.params["confirm_seed"])] = 100 * metrics.old_task_accuracy(final)
    return out


def _outcome(exp: ExperimentRuns, method: str, split: str) -> MethodOutcome:
    """A method's confirmation, rebuilt from its tracked runs as `confirm` built it."""
    outcome = MethodOutcome()
    for r in exp.of("confirm", method):
        seed = int(r.params.get("confirm_seed", -1))
        final = r.reported_finals(split)
        if r.state == "finished" and final:
            outcome.finals[seed] = final
        elif r.state == "diverged":
            outcome.diverged.append(seed)
    parents = exp.of("study", method)
    summary = parents[0].metrics if parents else {}
    if "confirm.test.learned" in summary and outcome.finals:
        # The parent keeps the mean learning accuracy over the reported tasks and seeds,
        # which is all the chance check reads.
        outcome.learned = dict.fromkeys(outcome.finals, summary["confirm.test.learned"])
        outcome.chances = [summary["confirm.test.chance"]]
    return outcome


def _get_verdict_info(exp: ExperimentRuns, methods: list[str], split: str) -> VerdictInfo | None:
    a, b = VERDICT_PAIR
    if a not in methods or b not in methods:
        return None
    per_a = _per_seed_old_accuracy(exp.of("confirm", a), split)
    per_b = _per_seed_old_accuracy(exp.of("confirm", b), split)
    if not per_a or not per_b:
        return None
    paired = stats.paired_difference(per_a, per_b, a, b)
    paper = None
    pa, pb = published(exp.sequence, a), published(exp.sequence, b)
    old_tasks = [t for t in pa if t in pb][:-1] or list(pa)[:1]
    if old_tasks:
        task = old_tasks[0]
        paper = (pa[task][0], pb[task][0], task)
    outcomes = {m: _outcome(exp, m, split) for m in methods}
    outcomes = {m: o for m, o in outcomes.items() if o.finals or o.diverged}
    parents = {m: exp.of("study", m)[0] for m in outcomes if exp.of("study", m)}
    scores = {m: p.metrics["confirm.tuning_score"] for m, p in parents.items()
              if "confirm.tuning_score" in p.metrics}
    reductions = {m: p.tags[TAG_REDUCES_TO] for m, p in parents.items() if TAG_REDUCES_TO in p.tags}
    names = sorted({k.removeprefix("best.") for p in parents.values() for k in p.metrics
                    if k.startswith("best.")})
    objective = names[0] if len(names) == 1 else f"the mean of {' and '.join(names)}"
    against = [stats.paired_difference(per_a, _per_seed_old_accuracy(exp.of("confirm", m), split), a, m)
               for m in outcomes if m != a and outcomes[m].finals]
    lines = verdict_lines(outcomes, scores, objective, reductions)
    key = parents[a].params.get("tuning_protocol") if a in parents else None
    confirm_runs = exp.of("confirm", a)
    tuning = (Tuning.from_key(key).describe(exp.sequence, confirm_runs[0].tasks)
              if key and confirm_runs else None)  # the line confirm opens with
    return VerdictInfo(paired, verdict_sentence(paired, outcomes), paper, split, against, lines,
                       tuning)


def draw(info: VerdictInfo, split: str):
    fig = go.Figure()
    for i, p in enumerate(info.against):
        d = p.difference
        fig.add_trace(go.Scatter(
            x=[d.mean], y=[f"{p.a} - {p.b} ({split}, n={d.n})"], mode="markers",
            marker=dict(size=12, color=colour(i + 1)), showlegend=False,
            error_x=dict(type="data", symmetric=False, array=[max(d.high - d.mean, 0) if d.n > 1 else 0],
                         arrayminus=[max(d.mean - d.low, 0) if d.n > 1 else 0])))
    if info.paper is not None:
        a_mean, b_mean, task = info.paper
        fig.add_trace(go.Scatter(
            x=[a_mean - b_mean], y=[f"paper: {info.paired.a} - {info.paired.b} ({PUBLISHED_SPLIT} sets, {task})"],
            mode="markers", marker=dict(size=12, symbol="diamond"),
            name=f"paper: difference of its published means ({a_mean:.2f} - {b_mean:.2f}), no CI given"))
    fig.add_vline(x=0, line_dash="dot")
    fig.update_layout(height=160 + 40 * (len(info.against) + (info.paper is not None)),
                      xaxis_title=f"{info.paired.a} minus each method: old-task accuracy (points); "
                                  "95% CI (t, paired by confirmation seed)",
                      title="Does CLASSP keep old tasks better than EWC, and than the best baseline?",
                      legend=dict(orientation="h", y=-0.5))
    return fig
