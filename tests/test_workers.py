"""`classp study run --workers N`: N real worker processes share one study on the default
local storage (an Optuna journal file, the MLflow SQLite store)."""

from __future__ import annotations

import optuna
from mlflow import MlflowClient

from classp.tracking import TAG_KIND, TAG_STUDY
from classp.workers import worker_environments
from support import TINY_STUDY, run_classp, subprocess_env


def test_two_workers_run_exactly_the_requested_trials_each_with_one_run(tmp_path):
    home = tmp_path / "home"
    done = run_classp("study", "run", TINY_STUDY, "--method", "sgd", "--n-trials", 4,
                      "--workers", 2, env={"CLASSP_HOME": str(home)})
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "[worker 0]" in out and "[worker 1]" in out
    assert "tiny.sgd: 4 trials (4 finished" in out and "4 run here by 2 workers" in out

    study = optuna.load_study(study_name="tiny.sgd", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(home / "optuna.journal"))))
    trials = study.get_trials()
    assert sorted(t.number for t in trials) == [0, 1, 2, 3]
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    run_ids = [t.user_attrs["mlflow_run_id"] for t in trials]
    assert len(set(run_ids)) == 4

    client = MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("split-digits")
    runs = client.search_runs([experiment.experiment_id], f"tags.`{TAG_STUDY}` = 'tiny.sgd'")
    children = [r for r in runs if r.data.tags.get(TAG_KIND) != "study"]
    parents = [r for r in runs if r.data.tags.get(TAG_KIND) == "study"]
    assert sorted(r.info.run_id for r in children) == sorted(run_ids)
    assert all(r.info.status == "FINISHED" for r in children)
    assert len(parents) == 1  # the workers share one parent run


def test_workers_are_pinned_round_robin_to_the_visible_gpus():
    envs = worker_environments(5, base={"CUDA_VISIBLE_DEVICES": "2,3"})
    assert [e["CUDA_VISIBLE_DEVICES"] for e in envs] == ["2", "3", "2", "3", "2"]
    assert [e["CLASSP_WORKER"] for e in envs] == ["0", "1", "2", "3", "4"]
    assert all(int(e["OMP_NUM_THREADS"]) >= 1 for e in envs)
    # No GPU visible: the workers inherit that and share the CPU.
    assert worker_environments(2, base={"CUDA_VISIBLE_DEVICES": ""})[0]["CUDA_VISIBLE_DEVICES"] == ""


def test_workers_zero_is_refused_in_one_line(tmp_path):
    done = run_classp("study", "run", TINY_STUDY, "--workers", 0,
                      env={"CLASSP_HOME": str(tmp_path / "home")})
    assert done.returncode == 2
    assert done.stderr.strip() == "classp: error: --workers must be at least 1, got 0"
    assert not (tmp_path / "home" / "optuna.journal").exists()


def test_two_commands_started_together_on_an_empty_home_both_finish(tmp_path):
    """Two independent `classp study run` (no --workers) on a home with no store yet: both
    create the MLflow SQLite store and the journal at once, and share the study."""
    import subprocess
    import sys

    home = tmp_path / "home"
    command = [sys.executable, "-m", "classp.cli", "study", "run", str(TINY_STUDY), "--method",
               "sgd", "--n-trials", "4", "--no-progress"]
    processes = [subprocess.Popen(command, env=subprocess_env(CLASSP_HOME=str(home)),
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for _ in range(2)]
    for process in processes:
        _, err = process.communicate(timeout=600)
        assert process.returncode == 0, err
    study = optuna.load_study(study_name="tiny.sgd", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(home / "optuna.journal"))))
    trials = study.get_trials()
    assert len(trials) == 4 and all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    client = MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("split-digits")
    runs = client.search_runs([experiment.experiment_id], f"tags.`{TAG_STUDY}` = 'tiny.sgd'")
    assert sorted(r.info.run_id for r in runs if r.data.tags.get(TAG_KIND) == "trial") == sorted(
        t.user_attrs["mlflow_run_id"] for t in trials)
    assert sum(r.data.tags.get(TAG_KIND) == "study" for r in runs) == 1


def test_a_worker_killed_mid_trial_has_its_trial_retried_by_the_others(tmp_path):
    """SIGKILL to one of three workers: the parent has not reaped it yet (a zombie), which
    must not pass for alive; the others fail its trial, retry it, and the study has exactly
    N trials with nothing left RUNNING and no MLflow run twice."""
    import os
    import signal
    import subprocess
    import sys
    import time

    home = tmp_path / "home"
    spec = tmp_path / "spec.toml"
    spec.write_text(TINY_STUDY.read_text().replace("epochs = 1", "epochs = 40"))
    n = 6
    parent = subprocess.Popen([sys.executable, "-m", "classp.cli", "study", "run", str(spec),
                               "--method", "sgd", "--n-trials", str(n), "--workers", "3"],
                              env=subprocess_env(CLASSP_HOME=str(home)),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    journal = home / "optuna.journal"
    victim, deadline = None, time.monotonic() + 300
    while victim is None and time.monotonic() < deadline:
        time.sleep(0.5)
        if not journal.exists():
            continue
        storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))
        try:
            trials = optuna.load_study(study_name="tiny.sgd", storage=storage).get_trials()
        except (KeyError, ValueError, OSError):
            continue
        running = [t for t in trials if t.state == optuna.trial.TrialState.RUNNING
                   and "mlflow_run_id" in t.user_attrs]
        if running:
            victim = running[0]
    assert victim is not None, "no trial started"
    os.kill(int(victim.user_attrs["classp.worker"].split(":")[1]), signal.SIGKILL)
    out, err = parent.communicate(timeout=900)
    assert parent.returncode == 0, out + err
    assert "exited with code -9; the others retried its trial, and the study has its 6 trials" in out

    trials = optuna.load_study(study_name="tiny.sgd", storage=storage).get_trials()
    assert sum(t.state == optuna.trial.TrialState.COMPLETE for t in trials) == n
    assert {t.state for t in trials} <= {optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL}
    killed = next(t for t in trials if t.number == victim.number)
    assert killed.state == optuna.trial.TrialState.FAIL
    retry = [t for t in trials if t.system_attrs.get("failed_trial") == victim.number]
    assert len(retry) == 1 and retry[0].state == optuna.trial.TrialState.COMPLETE
    client = MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("split-digits")
    runs = client.search_runs([experiment.experiment_id], f"tags.`{TAG_STUDY}` = 'tiny.sgd'")
    assert not [r for r in runs if r.info.status == "RUNNING"]
    complete_runs = [t.user_attrs["mlflow_run_id"] for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(set(complete_runs)) == n  # no run counted twice
