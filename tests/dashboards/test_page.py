"""The dashboard page as a user meets it: the command, a real headless Chromium, offline."""

from __future__ import annotations

from pathlib import Path

import pytest

from classp.dashboards import build_dashboard, load_dashboard_spec
from classp.dashboards.page import DASHBOARD_EXPERIMENT
from classp.errors import UserError
from support import SCREENSHOTS, chromium_path, free_port, run_classp

REPO = Path(__file__).resolve().parents[2]
SPEC = REPO / "dashboards" / "classp-vs-ewc.toml"
def _spec(tmp_path, methods=("classp", "ewc"), sequences=("split-digits", "mnist-fmnist")) -> Path:
    text = SPEC.read_text()
    text = text.replace('methods = ["classp", "ewc", "sgd"]', f"methods = {list(methods)!r}".replace("'", '"'))
    text = text.replace('sequences = ["permuted-digits", "split-digits", "mnist-fmnist"]',
                        f"sequences = {list(sequences)!r}".replace("'", '"'))
    assert f"sequences = {list(sequences)!r}".replace("'", '"') in text  # the edit took
    path = tmp_path / "spec.toml"
    path.write_text(text)
    return path


def test_the_page_renders_every_panel_offline_in_chromium(tracked, tmp_path):
    from playwright.sync_api import sync_playwright

    out = build_dashboard(load_dashboard_spec(_spec(tmp_path)), out=tmp_path / "dash.html")
    SCREENSHOTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync"])
        context = browser.new_context(offline=True, viewport={"width": 1400, "height": 1000})
        page = context.new_page()
        errors = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(out.as_uri())
        page.wait_for_function("document.querySelectorAll('.js-plotly-plot .main-svg').length >= 8",
                               timeout=30_000)
        # split-digits: 8 figures and the table; mnist-fmnist has no runs: a message instead
        for panel in ("verdict", "table1", "matrices", "forgetting", "pareto", "history", "sparsity", "memory"):
            assert page.locator(f'[data-panel="{panel}"] .js-plotly-plot').count() == 1, panel
            assert page.locator(f'[data-panel="{panel}"] .js-plotly-plot .main-svg').count() >= 1
        assert page.locator('[data-panel="summary"] table tr').count() == 3
        assert "No difference between classp and ewc detectable with 2 seeds" in page.inner_text(
            '[data-panel="verdict"]')
        assert "No runs in the MLflow experiment mnist-fmnist" in page.inner_text("body")
        page.screenshot(path=str(SCREENSHOTS / "dashboard.png"), full_page=True)
        browser.close()
    assert errors == []
    assert (SCREENSHOTS / "dashboard.png").stat().st_size > 10_000


def test_the_command_writes_the_page_and_logs_it_to_mlflow(tracked, tmp_path):
    out = run_classp("dashboard", _spec(tmp_path), "--out", tmp_path / "d.html")
    assert out.returncode == 0, out.stderr
    assert "wrote" in out.stdout
    html = (tmp_path / "d.html").read_text()
    assert '<script src="http' not in html and "Plotly.newPlot" in html
    exp = tracked.client.get_experiment_by_name(DASHBOARD_EXPERIMENT)
    run, = tracked.client.search_runs([exp.experiment_id])
    assert [a.path for a in tracked.client.list_artifacts(run.info.run_id)] == ["d.html"]


def test_missing_methods_and_empty_experiments_are_said_in_place(tracked, tmp_path):
    spec = load_dashboard_spec(_spec(tmp_path, methods=("classp", "si")))
    html = build_dashboard(spec, out=tmp_path / "d.html", log_to_mlflow=False).read_text()
    assert "Not shown, no data: si" in html
    assert "No runs in the MLflow experiment mnist-fmnist" in html


def test_a_store_without_any_runs_gives_messages_not_a_blank_page(classp_home, tmp_path):
    html = build_dashboard(load_dashboard_spec(_spec(tmp_path)), out=tmp_path / "d.html",
                           log_to_mlflow=False).read_text()
    assert html.count("No runs in the MLflow experiment") == 2 and "0 figures" in html


@pytest.mark.parametrize("edit, message", [
    (lambda t: t.replace('"memory", "summary"', '"memory", "radar"'), "dashboard.panels: unknown panel 'radar'"),
    (lambda t: t.replace('"ewc", "sgd"', '"ewc", "lwf"'), "dashboard.methods: unknown method 'lwf'"),
    (lambda t: t.replace('split = "test"', 'split = "test"\ncolour = 1'), "dashboard.colour: unknown key"),
])
def test_a_bad_dashboard_spec_is_one_line(tmp_path, classp_home, edit, message):
    bad = tmp_path / "bad.toml"
    bad.write_text(edit(SPEC.read_text()))
    out = run_classp("dashboard", bad)
    assert out.returncode == 2
    line, = out.stderr.strip().splitlines()
    assert line.startswith(f"classp: error: {bad}: ") and message in line
    with pytest.raises(UserError):
        load_dashboard_spec(bad)


def test_an_unreachable_tracking_uri_is_one_line(tmp_path, classp_home):
    out = run_classp("dashboard", SPEC, "--tracking-uri", f"http://127.0.0.1:{free_port()}",
                     "--out", tmp_path / "d.html")
    assert out.returncode == 2
    line, = out.stderr.strip().splitlines()
    assert "cannot reach the MLflow tracking store" in line
    assert not (tmp_path / "d.html").exists()
