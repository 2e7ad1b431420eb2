"""The local journal storage survives its workers: a worker killed mid-trial leaves no
zombie (its trial is failed and retried, its MLflow run closed), and a journal torn in the
middle of its last line is repaired, with the cut bytes kept."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import optuna
from mlflow import MlflowClient

from classp.tracking import TAG_KIND, TAG_STUDY
from support import run_classp, subprocess_env

SPEC = """
[study]
name = "{name}"
sequence = "split-digits"
methods = ["sgd"]
n_trials = {n}
seeds = [0]

[run]
epochs = {epochs}
subsample = 0.3
log_every = 5

[sampler]
name = "random"
seed = 0

[methods.sgd.search]
lr = {{ low = 1e-2, high = 0.5, log = true }}
"""


def _spec(tmp_path, name, n, epochs):
    path = tmp_path / f"{name}.toml"
    path.write_text(SPEC.format(name=name, n=n, epochs=epochs))
    return path


def _journal_study(home, name):
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(home / "optuna.journal")))
    return optuna.load_study(study_name=f"{name}.sgd", storage=storage)


def test_a_killed_local_worker_s_trial_is_failed_retried_and_the_study_completes(tmp_path):
    home = tmp_path / "home"
    spec = _spec(tmp_path, "killed", 3, epochs=12)  # trials of a few seconds
    env = subprocess_env(CLASSP_HOME=str(home))
    victim = subprocess.Popen([sys.executable, "-m", "classp.cli", "study", "run", str(spec),
                               "--no-progress"], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            try:
                trials = _journal_study(home, "killed").get_trials()
            except (KeyError, FileNotFoundError, ValueError):
                trials = []
            if any(t.state == optuna.trial.TrialState.RUNNING and "mlflow_run_id" in t.user_attrs
                   for t in trials):
                break
            time.sleep(0.2)
        else:
            raise TimeoutError("no trial started")
    finally:
        os.killpg(victim.pid, signal.SIGKILL)
        victim.communicate()

    done = run_classp("study", "run", spec, "--no-progress", env={"CLASSP_HOME": str(home)})
    assert done.returncode == 0, done.stderr
    trials = _journal_study(home, "killed").get_trials()
    failed = [t for t in trials if t.state == optuna.trial.TrialState.FAIL]
    assert len(failed) == 1  # the killed one, not left RUNNING
    retries = [t for t in trials if failed[0].number in t.system_attrs.get("retry_history", [])]
    assert len(retries) == 1 and retries[0].params == failed[0].params
    assert retries[0].state == optuna.trial.TrialState.COMPLETE
    assert sum(t.state == optuna.trial.TrialState.COMPLETE for t in trials) == 3
    assert not any(t.state == optuna.trial.TrialState.RUNNING for t in trials)

    client = MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("split-digits")
    runs = client.search_runs([experiment.experiment_id], f"tags.`{TAG_STUDY}` = 'killed.sgd'")
    killed_run = next(r for r in runs if r.info.run_id == failed[0].user_attrs["mlflow_run_id"])
    assert killed_run.info.status == "FAILED"
    assert not [r for r in runs if r.info.status == "RUNNING" and r.data.tags[TAG_KIND] == "trial"]


def test_a_journal_torn_mid_line_is_repaired_and_the_study_resumes(tmp_path):
    home = tmp_path / "home"
    spec = _spec(tmp_path, "torn", 2, epochs=1)
    first = run_classp("study", "run", spec, "--n-trials", 1, "--no-progress", env={"CLASSP_HOME": str(home)})
    assert first.returncode == 0, first.stderr
    journal = home / "optuna.journal"
    whole = journal.read_bytes()
    last_line_start = whole.rstrip(b"\n").rfind(b"\n") + 1
    torn_at = last_line_start + (len(whole) - last_line_start) // 2
    journal.write_bytes(whole[:torn_at])  # a crash in the middle of writing the last line

    done = run_classp("study", "run", spec, "--no-progress", env={"CLASSP_HOME": str(home)})
    assert done.returncode == 0, done.stderr
    assert "ended in a torn line (a crash mid-write)" in done.stderr
    kept = list(home.glob("optuna.journal.torn-*"))
    assert len(kept) == 1 and kept[0].read_bytes() == whole[last_line_start:torn_at]
    trials = _journal_study(home, "torn").get_trials()
    assert sum(t.state == optuna.trial.TrialState.COMPLETE for t in trials) >= 2
    assert journal.read_bytes().endswith(b"\n")
