"""Studies whose trials train as populations (`classp study run --population K`): exactly
the requested trials, each with the Optuna record and the MLflow run a single trial
writes; diverged and pruned trials recorded as such; what populations cannot train is
refused in one line before anything is recorded."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import optuna
import pytest
from mlflow import MlflowClient

from classp.specs import load_spec
from classp.study import open_storage, open_study, run_study
from classp.tracking import TAG_KIND, TAG_STATE
from support import TINY_STUDY, run_classp


def _trials(home: Path, name: str):
    storage = open_storage(str(home / "optuna.journal")).optuna_storage
    return optuna.load_study(study_name=name, storage=storage).get_trials()


def _trial_runs(home: Path):
    client = MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("split-digits")
    runs = client.search_runs([experiment.experiment_id], f"tags.`{TAG_KIND}` = 'trial'", max_results=1000)
    return client, runs


def _shape(client: MlflowClient, run) -> dict:
    """What a run holds, by name: the keys of its params, metrics and tags, its artifacts,
    and how many points each metric has."""
    artifacts = sorted(a.path for a in client.list_artifacts(run.info.run_id))
    points = {k: len(client.get_metric_history(run.info.run_id, k))
              for k in ("train_loss", "val.acc", "sparsity/all")}
    return {"params": sorted(run.data.params), "metrics": sorted(run.data.metrics),
            "tags": sorted(k for k in run.data.tags if not k.startswith("mlflow.log-model")),
            "artifacts": artifacts, "points": points}


def test_a_population_study_has_exactly_the_trials_each_run_shaped_as_a_single_trials(tmp_path):
    together, alone = tmp_path / "together", tmp_path / "alone"
    done = run_classp("study", "run", TINY_STUDY, "--method", "classp", "--n-trials", 10,
                      "--population", 4, env={"CLASSP_HOME": str(together)})
    assert done.returncode == 0, done.stderr
    assert "tiny.classp: 10 trials (10 finished, 0 pruned, 0 failed, 0 diverged); 10 run here" in done.stdout
    trials = _trials(together, "tiny.classp")
    assert sorted(t.number for t in trials) == list(range(10))
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    client, runs = _trial_runs(together)
    assert sorted(r.info.run_id for r in runs) == sorted(t.user_attrs["mlflow_run_id"] for t in trials)
    assert all(r.info.status == "FINISHED" and r.data.tags[TAG_STATE] == "finished" for r in runs)
    # The paper's settings are still the first trial's.
    assert trials[0].params["lr"] == 0.2 and trials[0].params["threshold"] == 0.5

    done = run_classp("study", "run", TINY_STUDY, "--method", "classp", "--n-trials", 1,
                      env={"CLASSP_HOME": str(alone)})
    assert done.returncode == 0, done.stderr
    single_client, (single,) = _trial_runs(alone)
    expected = _shape(single_client, single)
    for run in runs:
        assert _shape(client, run) == expected
    # The paper trial, trained in a population, is the trial trained alone (float tolerance).
    paper = next(r for r in runs if r.data.params["trial"] == "0")
    assert abs(paper.data.metrics["val.acc"] - single.data.metrics["val.acc"]) <= 0.02


def test_every_seed_of_a_trial_is_logged_as_alone(tmp_path):
    spec = tmp_path / "two-seeds.toml"
    spec.write_text(TINY_STUDY.read_text().replace("seeds = [0]", "seeds = [0, 1]"))
    shapes = []
    for home, population in ((tmp_path / "together", 3), (tmp_path / "alone", 1)):
        done = run_classp("study", "run", spec, "--method", "sgd", "--n-trials", 3,
                          "--population", population, env={"CLASSP_HOME": str(home)})
        assert done.returncode == 0, done.stderr
        client, runs = _trial_runs(home)
        assert len(runs) == 3
        shapes.append([_shape(client, r) for r in runs])
        assert all("seed1/val.acc" in r.data.metrics for r in runs)
    assert shapes[0] == shapes[1]


def test_diverged_and_pruned_members_are_recorded_as_such(tmp_path, monkeypatch):
    monkeypatch.setenv("CLASSP_HOME", str(tmp_path / "home"))
    diverging = tmp_path / "diverging.toml"
    diverging.write_text(TINY_STUDY.read_text().replace(
        '[methods.sgd.search]\nlr = { low = 1e-2, high = 0.5, log = true }',
        '[methods.sgd.search]\nlr = { low = 1e8, high = 1e9, log = true }'))
    printed = []
    run_study(dataclasses.replace(load_spec(diverging), population=3), methods=["sgd"], n_trials=3,
              echo=printed.append)
    assert printed[0] == "tiny.sgd: 3 trials (0 finished, 0 pruned, 0 failed, 3 diverged); 3 run here"
    trials = _trials(tmp_path / "home", "tiny.sgd")
    assert all(t.user_attrs["status"] == "diverged" and t.user_attrs["diverged_at_step"] >= 1 for t in trials)

    monkeypatch.setenv("CLASSP_HOME", str(tmp_path / "pruning"))
    pruning = tmp_path / "pruning.toml"
    pruning.write_text(TINY_STUDY.read_text().replace("seeds = [0]", "population = 2\nseeds = [0]")
                       + '\n[pruner]\nname = "median"\nn_startup_trials = 1\n')
    spec = load_spec(pruning)
    assert spec.population == 2
    study = open_study(spec, "sgd", open_storage(None))
    # A finished trial that was perfect at every task: any real trial falls below the median.
    study.add_trial(optuna.trial.create_trial(
        params={"lr": 0.1}, distributions={"lr": optuna.distributions.FloatDistribution(1e-2, 0.5, log=True)},
        value=1.0, intermediate_values={k: 1.0 for k in range(5)}))
    printed = []
    run_study(spec, methods=["sgd"], n_trials=3, echo=printed.append)
    assert printed[0] == "tiny.sgd: 3 trials (1 finished, 2 pruned, 0 failed, 0 diverged); 2 run here"
    _, runs = _trial_runs(tmp_path / "pruning")
    assert {(r.info.status, r.data.tags[TAG_STATE]) for r in runs} == {("KILLED", "pruned")}


def test_what_populations_cannot_train_is_refused_before_anything_is_recorded(tmp_path):
    home = tmp_path / "home"
    done = run_classp("study", "run", TINY_STUDY, "--method", "sgd", "--n-trials", 1,
                      env={"CLASSP_HOME": str(home)})
    assert done.returncode == 0, done.stderr
    journal = (home / "optuna.journal").read_bytes()
    targets = tmp_path / "targets.toml"
    targets.write_text(TINY_STUDY.read_text().replace("epochs = 1", "epochs = 1\nloss_targets = [0.5]"))
    zero = tmp_path / "zero.toml"
    zero.write_text(TINY_STUDY.read_text().replace("seeds = [0]", "population = 0\nseeds = [0]"))
    cases = [
        ((TINY_STUDY, "--population", 0), "classp: error: --population must be at least 1 (1: one "
                                          "trial at a time), got 0"),
        ((targets, "--population", 2), "classp: error: populations train fixed epochs; this protocol "
                                       "ends tasks at loss targets: give --epochs, or run them one by "
                                       "one (population 1)"),
        ((zero,), f"classp: error: {zero}: study.population: must be at least 1 (1: one trial at a "
                  f"time), got 0"),
    ]
    for args, message in cases:
        done = run_classp("study", "run", *args, "--method", "sgd", "--n-trials", 2,
                          env={"CLASSP_HOME": str(home)})
        assert (done.returncode, done.stderr.strip()) == (2, message)
        assert (home / "optuna.journal").read_bytes() == journal
    done = run_classp("study", "confirm", TINY_STUDY, "--population", 0, env={"CLASSP_HOME": str(home)})
    assert (done.returncode, done.stderr.strip()) == (2, cases[0][1])
    assert (home / "optuna.journal").read_bytes() == journal


def _numbers(line: str) -> list[float]:
    return [float(t) for t in re.findall(r"-?\d+\.\d+", line)]


def test_confirm_in_populations_prints_the_table_of_confirm_one_by_one(tmp_path):
    home = tmp_path / "home"
    done = run_classp("study", "run", TINY_STUDY, "--n-trials", 2, env={"CLASSP_HOME": str(home)})
    assert done.returncode == 0, done.stderr
    tables = []
    for population in (1, 2):
        done = run_classp("study", "confirm", TINY_STUDY, "--population", population,
                          env={"CLASSP_HOME": str(home)})
        assert done.returncode == 0, done.stderr
        tables.append(done.stdout.strip().splitlines())
    alone, together = tables
    assert len(alone) == len(together)
    for a, b in zip(alone, together):
        # The same words; every number within float tolerance (a few test samples).
        assert re.sub(r"-?\d+\.\d+", "#", a) == re.sub(r"-?\d+\.\d+", "#", b)
        assert _numbers(a) == pytest.approx(_numbers(b), abs=2.0)
    _, runs = _trial_runs(home)
    client = MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("split-digits")
    confirms = client.search_runs([experiment.experiment_id], f"tags.`{TAG_KIND}` = 'confirm'")
    assert sorted(r.info.run_name for r in confirms) == sorted(
        f"{m} confirm seed {s}" for m in ("classp", "sgd") for s in (7, 8) for _ in range(2))
    assert all(r.info.status == "FINISHED" for r in confirms)
