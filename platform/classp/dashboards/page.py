"""Assemble the panels into one self-contained HTML page (plotly.js embedded once: the
page opens offline) and log it to MLflow."""

from __future__ import annotations

import html
import time
from pathlib import Path

from classp.dashboards._summary import SummaryInfo
from classp.dashboards._verdict import VerdictInfo
from classp.dashboards.panels import PANELS
from classp.dashboards.runs import ExperimentRuns, load_experiment
from classp.dashboards.spec import DashboardSpec
from classp.paths import output_file
from classp.tracking import TAG_DASHBOARD, TAG_KIND, Tracking

DASHBOARD_EXPERIMENT = "classp-dashboards"

WHAT_TO_RUN = {
    "confirm": "run `classp study confirm studies/{sequence}.toml`",
    "trial": "run `classp study run studies/{sequence}.toml`",
}


def _message(text: str) -> str:
    return f'<div class="message">{html.escape(text)}</div>'


def _table(info: SummaryInfo) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in info.header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
                   for row in info.rows)
    return f'<table class="summary"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _verdict_text(info: VerdictInfo) -> str:
    text = f'<p class="verdict"><strong>{html.escape(info.sentence)}</strong></p>'
    if info.tuning:
        text += f'<p class="meta">{html.escape(info.tuning[0].upper() + info.tuning[1:])}.</p>'
    # The lines `classp study confirm` prints, rebuilt from the same runs: the comparisons
    # with every method, the best baseline, chance warnings and what CLASSP's settings are.
    text += '<pre class="verdicts">' + html.escape("\n".join(info.lines)) + "</pre>"
    if info.paper is not None:
        a_mean, b_mean, task = info.paper
        text += (f'<p class="meta">The paper claims {a_mean:.2f}% against {b_mean:.2f}% on {task} '
                 f'({a_mean - b_mean:+.2f} points; mean of 10 runs on the training sets, model in '
                 f'training mode). Ours: the {info.split} split, eval mode, the studies\' best '
                 f'settings of each method.</p>')
    return text


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
                             f"{_table(PANELS['summary'].info(exp, list(spec.methods), spec.split))}</div>")
                continue
            panel = PANELS[name]
            info = panel.info(exp, list(spec.methods), spec.split)
            figure = None if info is None else panel.draw(info, spec.split)
            parts.append(f'<div class="panel" data-panel="{name}"><h3>{html.escape(panel.title)}</h3>')
            if name == "verdict" and info is not None:
                parts.append(_verdict_text(info))
            hint = WHAT_TO_RUN[panel.needs].format(sequence=sequence)
            if figure is None:
                kind = "confirmation runs" if panel.needs == "confirm" else "finished trials"
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
.verdict { font-size: 1.15em; }
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
    out = output_file(Path(out or f"{spec.name}.html"), "--out", f"{spec.name}.html")
    tracking = Tracking(tracking_uri)
    tracking.check()
    experiments = {s: load_experiment(tracking.client, s) for s in spec.sequences}
    page = render(spec, experiments)
    out.write_text(page)
    if log_to_mlflow:
        experiment_id = tracking.experiment(DASHBOARD_EXPERIMENT)
        run = tracking.client.create_run(experiment_id, run_name=spec.name, tags={
            TAG_KIND: "dashboard", TAG_DASHBOARD: spec.name})
        with tracking.ending_on_error(run.info.run_id):
            tracking.client.log_artifact(run.info.run_id, str(out))
        tracking.client.set_terminated(run.info.run_id, "FINISHED")
    return out
