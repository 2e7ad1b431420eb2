"""The panels: numbers first (`*_info`, NamedTuples), then drawing (`draw_*`).

An info function returns None when the runs it needs are missing; the page shows a
message in the panel's place instead of an empty figure.
"""

from __future__ import annotations

import statistics
from typing import NamedTuple

from classp import metrics, stats
from classp.colours import colour
from classp.confirmation import VERDICT_PAIR, MethodOutcome, verdict_lines, verdict_sentence
from classp.dashboards.runs import ExperimentRuns, RunRecord
from classp.paper import PUBLISHED_SPLIT, published
from classp.specs import Tuning
from classp.tracking import TAG_REDUCES_TO

CI_LEGEND = "error bars: 95% bootstrap CI of the mean over the confirmation seeds"


def _mean_ci(values: list[float]) -> tuple[float, float, float]:
    """(mean, minus, plus): the error bar of a bootstrap 95% CI, which stays inside the
    range of the values (so within [0, 100] for accuracies)."""
    s = stats.summarize(values)
    if s.n < 2:
        return s.mean, 0.0, 0.0
    return s.mean, s.mean - s.low, s.high - s.mean


def _finished(runs: list[RunRecord]) -> list[RunRecord]:
    return [r for r in runs if r.state == "finished"]


# -- 0. the verdict: CLASSP against EWC, every other method and the best baseline -------

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
    for r in _finished(runs):
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


def verdict_info(exp: ExperimentRuns, methods: list[str], split: str) -> VerdictInfo | None:
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


def draw_verdict(info: VerdictInfo, split: str):
    import plotly.graph_objects as go

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


# -- 1. final accuracy per task (the paper's Table 1 as a chart) ------------------------

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


def table1_info(exp: ExperimentRuns, methods: list[str], split: str) -> Table1Info | None:
    mean, minus, plus, runs, missing, tasks = {}, {}, {}, {}, [], []
    for m in methods:
        finished = [r for r in _finished(exp.of("confirm", m)) if r.final_accuracies(split)]
        if not finished:
            missing.append(m)
            continue
        tasks = tasks or finished[0].tasks
        per_task = list(zip(*(r.final_accuracies(split) for r in finished)))
        bars = [_mean_ci([100 * v for v in column]) for column in per_task]
        mean[m], minus[m], plus[m] = ([b[i] for b in bars] for i in range(3))
        runs[m] = len(finished)
    if not mean:
        return None
    return Table1Info(tasks, [m for m in methods if m in mean], mean, minus, plus, runs,
                      {m: published(exp.sequence, m) for m in methods if published(exp.sequence, m)},
                      PUBLISHED_SPLIT, missing)


def draw_table1(info: Table1Info, split: str):
    import plotly.graph_objects as go

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


# -- 2. accuracy matrices ---------------------------------------------------------------

class MatricesInfo(NamedTuple):
    tasks: list[str]
    matrices: dict[str, list[list[float]]]  # method -> mean R (rows: before, after task i)
    runs: dict[str, int]
    missing: list[str]


def matrices_info(exp: ExperimentRuns, methods: list[str], split: str) -> MatricesInfo | None:
    matrices, runs, missing, tasks = {}, {}, [], []
    for m in methods:
        found = []
        for r in _finished(exp.of("confirm", m)):
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


def draw_matrices(info: MatricesInfo):
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

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


# -- 3. forgetting and backward transfer ------------------------------------------------

class ForgettingInfo(NamedTuple):
    methods: list[str]
    forgetting: dict[str, tuple[float, float, float]]  # mean, CI minus, CI plus (points)
    bwt: dict[str, tuple[float, float, float]]
    missing: list[str]


def forgetting_info(exp: ExperimentRuns, methods: list[str], split: str) -> ForgettingInfo | None:
    forgetting, bwt, missing = {}, {}, []
    for m in methods:
        finished = [r for r in _finished(exp.of("confirm", m)) if f"{split}.bwt" in r.metrics]
        if not finished:
            missing.append(m)
            continue
        forgetting[m] = _mean_ci([100 * r.metrics[f"{split}.forgetting"] for r in finished])
        bwt[m] = _mean_ci([100 * r.metrics[f"{split}.bwt"] for r in finished])
    if not forgetting:
        return None
    return ForgettingInfo(list(forgetting), forgetting, bwt, missing)


def draw_forgetting(info: ForgettingInfo):
    import plotly.graph_objects as go

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


# -- 4. old-task against new-task accuracy, with Pareto fronts --------------------------

class ParetoInfo(NamedTuple):
    points: dict[str, list[tuple[float, float, int]]]  # method -> (old, new, trial)
    fronts: dict[str, list[tuple[float, float, int]]]
    missing: list[str]


def pareto_front(points: list[tuple[float, float, int]]) -> list[tuple[float, float, int]]:
    """The points no other point beats on both old- and new-task accuracy, by old."""
    front = [p for p in points if not any(
        q[0] >= p[0] and q[1] >= p[1] and (q[0] > p[0] or q[1] > p[1]) for q in points)]
    return sorted(front)


def pareto_info(exp: ExperimentRuns, methods: list[str], split: str = "val") -> ParetoInfo | None:
    points, fronts, missing = {}, {}, []
    for m in methods:
        pts = []
        for r in _finished(exp.of("trial", m)):
            finals = r.final_accuracies(split)
            if finals and len(finals) > 1:
                pts.append((metrics.old_task_accuracy(finals), metrics.new_task_accuracy(finals), r.trial))
        if not pts:
            missing.append(m)
            continue
        points[m], fronts[m] = pts, pareto_front(pts)
    return ParetoInfo(points, fronts, missing) if points else None


def draw_pareto(info: ParetoInfo):
    import plotly.graph_objects as go

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


# -- 5. optimisation history ------------------------------------------------------------

class HistoryInfo(NamedTuple):
    objective: str
    values: dict[str, list[tuple[int, float]]]  # method -> (trial, value), finished trials
    best: dict[str, list[tuple[int, float]]]  # method -> running best
    missing: list[str]


def history_info(exp: ExperimentRuns, methods: list[str]) -> HistoryInfo | None:
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


def draw_history(info: HistoryInfo):
    import plotly.graph_objects as go

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


# -- 6. update-sparsity histograms, side by side ----------------------------------------

class SparsityInfo(NamedTuple):
    params: list[str]
    # method -> parameter -> (bin centres as a share of steps, share of weights)
    histograms: dict[str, dict[str, tuple[list[float], list[float]]]]
    source: dict[str, str]  # method -> which run
    missing: list[str]


def sparsity_info(exp: ExperimentRuns, methods: list[str]) -> SparsityInfo | None:
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


def draw_sparsity(info: SparsityInfo):
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

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


# -- 7. memory kept across tasks --------------------------------------------------------

class MemoryInfo(NamedTuple):
    methods: list[str]
    state_bytes: dict[str, float]
    missing: list[str]


def memory_info(exp: ExperimentRuns, methods: list[str]) -> MemoryInfo | None:
    state, missing = {}, []
    for m in methods:
        values = [r.metrics["state_bytes"] for r in _finished(exp.of("confirm", m) or exp.of("trial", m))
                  if "state_bytes" in r.metrics]
        if not values:
            missing.append(m)
            continue
        state[m] = statistics.median(values)
    return MemoryInfo(list(state), state, missing) if state else None


def draw_memory(info: MemoryInfo):
    import plotly.graph_objects as go

    fig = go.Figure(go.Bar(x=info.methods, y=[info.state_bytes[m] / 1e6 for m in info.methods],
                           text=[f"{info.state_bytes[m] / 1e6:.2f} MB" for m in info.methods],
                           textposition="outside"))
    fig.update_layout(yaxis_title="MB kept across tasks",
                      title="Memory each method keeps across tasks (measured from its tensors)")
    return fig


# -- 8. summary table -------------------------------------------------------------------

class SummaryInfo(NamedTuple):
    header: list[str]
    rows: list[list[str]]


def summary_info(exp: ExperimentRuns, methods: list[str], split: str) -> SummaryInfo:
    header = ["method", "trials (finished / pruned / failed / diverged)", "confirmation runs",
              f"ACC {split} (%)", f"BWT {split} (points)", f"forgetting {split} (points)",
              "state kept (MB)"]
    rows = []
    for m in methods:
        trials = exp.of("trial", m)
        counts = [sum(r.state == s for r in trials) for s in ("finished", "pruned", "failed", "diverged")]
        confirm = [r for r in _finished(exp.of("confirm", m)) if f"{split}.acc" in r.metrics]

        def cell(key: str, scale: float = 100.0, confirm=confirm) -> str:
            if not confirm:
                return "-"
            return stats.summarize([scale * r.metrics[key] for r in confirm]).short()

        state = [r.metrics["state_bytes"] for r in confirm or _finished(trials) if "state_bytes" in r.metrics]
        rows.append([m, " / ".join(map(str, counts)), str(len(confirm)),
                     cell(f"{split}.acc"), cell(f"{split}.bwt"), cell(f"{split}.forgetting"),
                     f"{statistics.median(state) / 1e6:.3f}" if state else "-"])
    return SummaryInfo(header, rows)
