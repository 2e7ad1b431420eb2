"""A trial's sparsity histograms, as a researcher sees them: a real `mlflow server`, a real
tiny study tracked into it, and headless Chromium showing the PNG inline in the run's
artifact view, with every request outside the server refused (offline)."""

from __future__ import annotations

from mlflow import MlflowClient

from support import (
    SCREENSHOTS,
    TINY_STUDY,
    chromium_path,
    run_classp,
    start_mlflow_server,
    stop_process,
)


def test_a_trial_s_histogram_renders_inline_in_the_mlflow_ui_offline(tmp_path):
    from playwright.sync_api import sync_playwright

    folder = tmp_path / "server"
    folder.mkdir()
    process, url = start_mlflow_server(folder)
    try:
        done = run_classp("study", "run", TINY_STUDY, "--method", "sgd", "--n-trials", 1,
                          "--tracking-uri", url, env={"CLASSP_HOME": str(tmp_path / "home")})
        assert done.returncode == 0, done.stderr
        client = MlflowClient(url)
        experiment = client.get_experiment_by_name("split-digits")
        trial, = client.search_runs([experiment.experiment_id], "tags.`classp.kind` = 'trial'")
        route = (f"{url}/#/experiments/{experiment.experiment_id}/runs/{trial.info.run_id}"
                 f"/artifactPath/sparsity/update_histograms.png")
        SCREENSHOTS.mkdir(exist_ok=True)
        outside = []
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium_path(), args=[
                "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync"])
            context = browser.new_context(viewport={"width": 1400, "height": 1000})

            def only_the_server(request_route):
                if request_route.request.url.startswith(url):
                    return request_route.continue_()
                outside.append(request_route.request.url)
                return request_route.abort()

            context.route("**/*", only_the_server)
            page = context.new_page()
            page.goto(route)
            page.wait_for_function(
                "Array.from(document.images).some(i => i.src.startsWith('data:image/png') && i.naturalWidth > 50)",
                timeout=60_000)
            page.screenshot(path=str(SCREENSHOTS / "mlflow-ui-histogram.png"))
            browser.close()
        assert outside == []
    finally:
        stop_process(process)
