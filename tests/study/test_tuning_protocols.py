"""Tuning protocols end to end: what the trials were given to train on, read back from what
each trial run recorded (its tasks and its accuracy matrix), and what confirm reports."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
from mlflow import MlflowClient

from classp.errors import UserError
from classp.specs import load_spec
from classp.study import confirm, open_storage, run_study
from classp.tracking import TAG_KIND
from support import TINY_STUDY

DIGIT_PAIRS = ["digits-01", "digits-23", "digits-45", "digits-67", "digits-89"]


def _spec(tmp_path: Path, tuning: str, name: str = "tiny"):
    path = tmp_path / f"{name}.toml"
    text = TINY_STUDY.read_text().replace('methods = ["classp", "sgd"]', 'methods = ["sgd"]')
    path.write_text(text.replace('name = "tiny"', f'name = "{name}"') + "\n[tuning]\n" + tuning)
    return load_spec(path)


def _trial_runs(home: Path):
    client = MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    exp = client.get_experiment_by_name("split-digits")
    return client, client.search_runs([exp.experiment_id], f"tags.`{TAG_KIND}` = 'trial'")


def _matrix(client, run, folder: Path) -> dict:
    folder.mkdir()
    return json.loads(Path(client.download_artifacts(run.info.run_id, "accuracy_matrix.json",
                                                     str(folder))).read_text())


def test_first_tasks_trials_never_see_a_later_task_and_confirm_reports_the_rest(classp_home, tmp_path):
    spec = _spec(tmp_path, 'protocol = "first-tasks"\ntasks = 2\n')
    run_study(spec, n_trials=2, echo=lambda *_: None)
    client, runs = _trial_runs(classp_home)
    assert len(runs) == 2
    for i, r in enumerate(runs):
        # what the trial trained and evaluated, as its run recorded it
        assert r.data.params["tasks"] == "digits-01,digits-23"
        matrix = _matrix(client, r, tmp_path / f"t{i}")
        assert all(len(row) == 2 for row in matrix["splits"]["val"])  # two tasks evaluated
        assert len(matrix["splits"]["val"]) == 3  # before training, after each of two tasks

    printed = []
    result = confirm(spec, echo=printed.append)
    lines = printed[0].splitlines()
    assert lines[0] == ("hyperparameters chosen by the first-tasks tuning protocol: trials trained "
                        "and scored on digits-01, digits-23 only; reported here: digits-45, "
                        "digits-67, digits-89")
    assert lines[3].split()[:4] == ["method", "digits-45", "digits-67", "digits-89"]
    # confirmation trained the whole stream; the outcome holds the reported tasks only
    exp = client.get_experiment_by_name("split-digits")
    confirm_runs = client.search_runs([exp.experiment_id], f"tags.`{TAG_KIND}` = 'confirm'")
    outcome = result["outcomes"]["sgd"]
    for r in confirm_runs:
        assert r.data.params["tasks"] == ",".join(DIGIT_PAIRS)
        assert r.data.params["reported_tasks"] == "digits-45,digits-67,digits-89"
        seed = int(r.data.params["confirm_seed"])
        finals = [r.data.metrics[f"test.final_acc_task{j}"] for j in range(1, 6)]
        assert outcome.finals[seed] == pytest.approx(finals[2:])
    old = [100 * (f[0] + f[1]) / 2 for f in outcome.finals.values()]
    assert outcome.old.mean == pytest.approx(sum(old) / len(old))
    parent, = client.search_runs([exp.experiment_id], f"tags.`{TAG_KIND}` = 'study'")
    assert parent.data.params["tuning_protocol"] == "first-tasks:2"


def test_held_out_stream_trials_never_see_a_task_of_the_reported_stream(classp_home, tmp_path):
    spec = _spec(tmp_path, 'protocol = "held-out-stream"\nstream = "permuted-digits"\n')
    run_study(spec, n_trials=2, echo=lambda *_: None)
    client, runs = _trial_runs(classp_home)
    assert len(runs) == 2
    for i, r in enumerate(runs):
        assert r.data.params["sequence"] == "permuted-digits"
        tuned = set(r.data.params["tasks"].split(","))
        assert tuned == {f"digits-p{k}" for k in range(1, 6)} and not tuned & set(DIGIT_PAIRS)
        # ten classes per task (permuted digits), not the reported stream's pairs: every
        # tuning task's matrix column is that of a ten-class task
        matrix = _matrix(client, r, tmp_path / f"t{i}")
        assert matrix["tasks"] == [f"digits-p{k}" for k in range(1, 6)]
    printed = []
    confirm(spec, echo=printed.append)
    lines = printed[0].splitlines()
    assert lines[0] == ("hyperparameters chosen by the held-out-stream tuning protocol: trials ran "
                        "on permuted-digits, which shares no task with split-digits, reported here")
    assert lines[3].split()[1:6] == DIGIT_PAIRS


def test_a_study_tuned_under_one_protocol_is_not_continued_or_confirmed_under_another(classp_home, tmp_path):
    same = _spec(tmp_path, 'protocol = "same-stream"\n', name="mixed")
    run_study(same, n_trials=1, echo=lambda *_: None)
    first = _spec(tmp_path, 'protocol = "first-tasks"\ntasks = 2\n', name="mixed")
    with pytest.raises(UserError, match="was tuned under the tuning protocol 'same-stream'; the spec "
                                        "asks for 'first-tasks:2'"):
        run_study(first, n_trials=2, echo=lambda *_: None)
    with pytest.raises(UserError, match=r"\[tuning\]: study mixed.sgd was tuned under 'same-stream'"):
        confirm(first, echo=lambda *_: None)
    study = optuna.load_study(study_name="mixed.sgd", storage=open_storage(None).optuna_storage)
    assert len(study.trials) == 1 and study.user_attrs["tuning"] == "same-stream"
