"""Assemble the panels into one self-contained HTML page (plotly.js embedded once: the
page opens offline) and log it to MLflow."""

from __future__ import annotations

import html
import time
from pathlib import Path

from classp.dashboards import panels as P
from classp.dashboards.runs import ExperimentRuns, load_experiment
from classp.dashboards.spec import DashboardSpec
from classp.tracking import TAG_KIND, Tracking

DASHBOARD_EXPERIMENT = "classp-dashboards"

WHAT_TO_RUN = {
    "confirm": "run `classp study confirm studies/{sequence}.toml`",
    "trial": "run `classp study run studies/{sequence}.toml`",
}


def _panel(spec: DashboardSpec, exp: ExperimentRuns, name: str):
    """(title, figure or None, message or None, missing methods) for one panel."""
    methods, split = list(spec.methods), spec.split
    if name == "table1":
        info = P.table1_info(exp, methods, split)
        return "Final accuracy per task", info and P.draw_table1(info, split), "confirm", info
    if name == "matrices":
        info = P.matrices_info(exp, methods, split)
        return "Accuracy matrices", info and P.draw_matrices(info), "confirm", info
    if name == "forgetting":
        info = P.forgetting_info(exp, methods, split)
        return "Forgetting and BWT", info and P.draw_forgetting(info), "confirm", info
    if name == "pareto":
        info = P.pareto_info(exp, methods)
        return "Old against new task", info and P.draw_pareto(info), "trial", info
    if name == "history":
        info = P.history_info(exp, methods)
        return "Optimisation history", info and P.draw_history(info), "trial", info
    if name == "sparsity":
        info = P.sparsity_info(exp, methods)
        return "Update sparsity", info and P.draw_sparsity(info), "trial", info
    if name == "memory":
        info = P.memory_info(exp, methods)
        return "Memory kept across tasks", info and P.draw_memory(info), "trial", info
    raise ValueError(name)


def _message(text: str) -> str:
    return f'<div class="message">{html.escape(text)}</div>'


def _table(info: P.SummaryInfo) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in info.header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
                   for row in info.rows)
    return f'<table class="summary"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def render(spec: DashboardSpec, experiments: dict[str, ExperimentRuns | None]) -> str:
    import plotly.io as pio
    from plotly.offline import get_plotlyjs

    parts = [f"<h1>{html.escape(spec.title)}</h1>",
             f'<p class="meta">Methods: {", ".join(spec.methods)}; split: {spec.split}; built '
             f'{time.strftime("%Y-%m-%d %H:%M")} from the tracked runs.</p>']
    figure_count = 0
    for sequence in spec.sequences:
        parts.append(f'<section><h2>{html.escape(sequence)}</h2>')
        exp = experiments.get(sequence)
        if exp is None or not exp.runs:
            parts.append(_message(f"No runs in the MLflow experiment {sequence}: "
                                  + WHAT_TO_RUN["trial"].format(sequence=sequence) + "."))
            parts.append("</section>")
            continue
        for name in spec.panels:
            if name == "summary":
                parts.append('<div class="panel" data-panel="summary"><h3>Summary</h3>'
                             f"{_table(P.summary_info(exp, list(spec.methods), spec.split))}</div>")
                continue
            title, figure, needs, info = _panel(spec, exp, name)
            parts.append(f'<div class="panel" data-panel="{name}"><h3>{html.escape(title)}</h3>')
            hint = WHAT_TO_RUN[needs].format(sequence=sequence)
            if figure is None:
                kind = "confirmation runs" if needs == "confirm" else "finished trials"
                parts.append(_message(f"No {kind} for {', '.join(spec.methods)} on {sequence}: {hint}."))
            else:
                figure_count += 1
                parts.append(pio.to_html(figure, full_html=False, include_plotlyjs=False,
                                         div_id=f"fig-{sequence}-{name}"))
                missing = getattr(info, "missing", [])
                if missing:
                    parts.append(_message(f"Not shown, no data: {', '.join(missing)} ({hint})."))
            parts.append("</div>")
        parts.append("</section>")
    style = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
.panel { margin: 1.5em 0; padding: 0.5em 1em; border: 1px solid #ddd; border-radius: 6px; }
.message { padding: 1em; background: #fff8e1; border-left: 4px solid #f0b400; margin: 0.5em 0; }
table.summary { border-collapse: collapse; } table.summary td, table.summary th {
  border: 1px solid #ccc; padding: 4px 10px; text-align: right; }
table.summary td:first-child { text-align: left; } .meta { color: #666; }"""
    return ("<!DOCTYPE html><html><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(spec.title)}</title><style>{style}</style>"
            f"<script>{get_plotlyjs()}</script></head><body>"
            + "\n".join(parts) + f'<p class="meta">{figure_count} figures.</p></body></html>')


def build_dashboard(spec: DashboardSpec, tracking_uri: str | None = None,
                    out: Path | None = None, log_to_mlflow: bool = True) -> Path:
    tracking = Tracking(tracking_uri)
    tracking.check()
    experiments = {s: load_experiment(tracking.client, s) for s in spec.sequences}
    page = render(spec, experiments)
    out = Path(out or f"{spec.name}.html")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page)
    if log_to_mlflow:
        experiment_id = tracking.experiment(DASHBOARD_EXPERIMENT)
        run = tracking.client.create_run(experiment_id, run_name=spec.name, tags={
            TAG_KIND: "dashboard", "classp.dashboard": spec.name})
        tracking.client.log_artifact(run.info.run_id, str(out))
        tracking.client.set_terminated(run.info.run_id, "FINISHED")
    return out
