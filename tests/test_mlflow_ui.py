"""The MLflow UI as a researcher sees it: a real `mlflow server` (or `classp ui`), a real
tiny study tracked into it, and headless Chromium with every request outside the server
refused (offline): a trial's sparsity PNG inline in its artifact view, and the study's runs
in MLflow's model-training view, named so the list reads without opening them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from mlflow import MlflowClient

from support import (
    SCREENSHOTS,
    TINY_STUDY,
    browse_runs_as_a_user,
    free_port,
    offline_page,
    run_classp,
    start_mlflow_server,
    stop_process,
    subprocess_env,
)


def test_a_trial_s_histogram_renders_inline_in_the_mlflow_ui_offline(tmp_path):
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
        with offline_page(url, viewport=(1400, 1000)) as (page, outside):
            page.goto(route)
            page.wait_for_function(
                "Array.from(document.images).some(i => i.src.startsWith('data:image/png') && i.naturalWidth > 50)",
                timeout=60_000)
            page.screenshot(path=str(SCREENSHOTS / "mlflow-ui-histogram.png"))
        assert outside == []
    finally:
        stop_process(process)


def test_classp_ui_opens_a_study_in_the_model_training_view_with_readable_run_names(tmp_path):
    """MLflow 3.17 opens every experiment in its GenAI workspace unless the browser chose
    otherwise; the server `classp ui` starts makes model training the default."""
    home = tmp_path / "home"
    done = run_classp("study", "run", TINY_STUDY, "--method", "sgd", "--n-trials", 2,
                      env={"CLASSP_HOME": str(home)})
    assert done.returncode == 0, done.stderr
    port = free_port()
    ui = subprocess.Popen([sys.executable, "-m", "classp.cli", "ui", "--port", str(port)],
                          env=subprocess_env(CLASSP_HOME=str(home)), stderr=subprocess.PIPE,
                          stdout=subprocess.DEVNULL, text=True, start_new_session=True)
    try:
        while True:
            line = ui.stderr.readline()
            assert line, f"classp ui exited with {ui.poll()} before announcing its URL"
            if line.startswith("MLflow UI on"):
                break
        url = line.split()[3]
        outside = browse_runs_as_a_user(url, "split-digits", "tiny.sgd", "sgd trial 1",
                                        "classp-ui")
        assert outside == []
    finally:
        os.killpg(ui.pid, signal.SIGTERM)
        ui.wait(timeout=60)
