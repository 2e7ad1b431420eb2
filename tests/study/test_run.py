"""Studies end to end: real Optuna storage, a real MLflow store (SQLite default and a real
`mlflow server` on loopback), the real `classp` command."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import optuna
import pytest
from mlflow import MlflowClient

from classp.specs import load_spec
from classp.study import open_storage, open_study, run_study
from classp.tracking import TAG_KIND, TAG_STATE
from support import TINY_STUDY, free_port, run_classp


def _client(home: Path, uri: str | None = None) -> MlflowClient:
    return MlflowClient(uri or f"sqlite:///{home / 'mlflow.db'}")


def _trials(home: Path, name: str):
    storage = open_storage(str(home / "optuna.journal")).optuna_storage
    return optuna.load_study(study_name=name, storage=storage).get_trials()


def _runs(client: MlflowClient, kind: str | None = None):
    exp = client.get_experiment_by_name("split-digits")
    query = f"tags.`{TAG_KIND}` = '{kind}'" if kind else ""
    return client.search_runs([exp.experiment_id], query, max_results=1000)


def test_a_study_tracks_a_parent_per_method_and_a_child_per_trial(classp_home):
    out = run_classp("study", "run", TINY_STUDY, "--n-trials", "3")
    assert out.returncode == 0, out.stderr
    client = _client(classp_home)
    parents = {r.data.tags["classp.method"]: r for r in _runs(client, "study")}
    assert set(parents) == {"classp", "sgd"}
    for method, parent in parents.items():
        trials = _trials(classp_home, f"tiny.{method}")
        assert len(trials) == 3
        children = [r for r in _runs(client, "trial")
                    if r.data.tags["mlflow.parentRunId"] == parent.info.run_id]
        assert len(children) == 3
        # each trial knows its run, and each run says which trial and how it ended
        assert {t.user_attrs["mlflow_run_id"] for t in trials} == {c.info.run_id for c in children}
        for child in children:
            assert child.info.status == "FINISHED" and child.data.tags[TAG_STATE] == "finished"
            assert child.data.params["method"] == method
            assert child.data.params["sequence"] == "split-digits"
            assert "classp.code_version" in child.data.tags
            assert {"val.acc", "val.bwt", "val.forgetting", "test.acc", "state_bytes"} <= set(child.data.metrics)
            assert any(k.startswith("sparsity/") for k in child.data.metrics)
    # The paper's settings were the classp study's first trial.
    first = _trials(classp_home, "tiny.classp")[0]
    assert first.params["lr"] == 0.2 and first.params["threshold"] == 0.5


def test_artifacts_hold_the_matrix_and_histograms_that_add_up(classp_home):
    spec = load_spec(TINY_STUDY)
    run_study(spec, methods=["classp"], n_trials=1, echo=lambda *_: None)
    client = _client(classp_home)
    child, = _runs(client, "trial")
    folder = Path(tempfile.mkdtemp())
    matrix = json.loads(Path(client.download_artifacts(child.info.run_id, "accuracy_matrix.json", str(folder))).read_text())
    R = matrix["splits"]["val"]
    assert len(R) == 6 and all(len(row) == 5 for row in R)
    histograms = json.loads(Path(client.download_artifacts(
        child.info.run_id, "sparsity/update_histograms.json", str(folder))).read_text())
    assert len(histograms["tasks"]) == 5
    sizes = {"net.1.weight": 64 * 256, "net.1.bias": 256, "net.3.weight": 256 * 256,
             "net.3.bias": 256, "net.5.weight": 256 * 10, "net.5.bias": 10}
    for task in histograms["tasks"]:
        for name, h in task["params"].items():
            assert sum(h["counts"]) == h["numel"] == sizes[name]
            assert len(h["edges"]) == len(h["counts"]) + 1
    png = Path(client.download_artifacts(child.info.run_id, "sparsity/update_histograms.png",
                                          str(folder))).read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) < 100_000  # an image, offline, small


def test_a_resumed_study_adds_trials_and_keeps_the_old(classp_home):
    spec = load_spec(TINY_STUDY)
    run_study(spec, methods=["sgd"], n_trials=2, echo=lambda *_: None)
    before = [(t.number, t.params, t.values) for t in _trials(classp_home, "tiny.sgd")]
    run_study(spec, methods=["sgd"], n_trials=4, echo=lambda *_: None)
    after = _trials(classp_home, "tiny.sgd")
    assert len(after) == 4
    assert [(t.number, t.params, t.values) for t in after[:2]] == before
    client = _client(classp_home)
    assert len(_runs(client, "study")) == 1  # the same parent run, resumed
    assert len(_runs(client, "trial")) == 4


def test_a_diverged_trial_is_recorded_as_diverged(classp_home, tmp_path):
    text = TINY_STUDY.read_text().replace("lr = { low = 1e-2, high = 0.5, log = true }\n\n[methods.sgd",
                                           "lr = { low = 1e-2, high = 0.5, log = true }\n\n[methods.sgd")
    text = text.replace('[methods.sgd.search]\nlr = { low = 1e-2, high = 0.5, log = true }',
                        '[methods.sgd.search]\nlr = { low = 1e8, high = 1e9, log = true }')
    spec_path = tmp_path / "diverging.toml"
    spec_path.write_text(text)
    printed = []
    run_study(load_spec(spec_path), methods=["sgd"], n_trials=3, echo=printed.append)
    trials = _trials(classp_home, "tiny.sgd")
    assert [t.state for t in trials] == [optuna.trial.TrialState.FAIL] * 3
    assert all(t.user_attrs["status"] == "diverged" and t.user_attrs["diverged_at_step"] >= 1
               for t in trials)
    client = _client(classp_home)
    runs = _runs(client, "trial")
    assert {(r.info.status, r.data.tags[TAG_STATE]) for r in runs} == {("FAILED", "diverged")}
    # the summary says so in plain sight, and the parent run carries the same counts
    assert printed[0] == "tiny.sgd: 3 trials (0 finished, 0 pruned, 0 failed, 3 diverged); 3 run here"
    assert printed[1] == "  best: none (no trial finished)"
    assert printed[2].startswith("  warning: 3 of 3 trials diverged (non-finite loss); the likely "
                                 "cause is lr: steps too large")
    parent, = _runs(client, "study")
    assert {k: parent.data.metrics[f"trials_{k}"] for k in ("finished", "pruned", "failed", "diverged")} \
        == {"finished": 0, "pruned": 0, "failed": 0, "diverged": 3}


def test_a_pruned_trial_is_recorded_as_pruned(classp_home, tmp_path):
    spec_path = tmp_path / "pruning.toml"
    spec_path.write_text(TINY_STUDY.read_text() + '\n[pruner]\nname = "median"\nn_startup_trials = 1\n')
    spec = load_spec(spec_path)
    storage = open_storage(None)
    study = open_study(spec, "sgd", storage)
    # A finished trial that was perfect at every task: any real trial falls below the median.
    study.add_trial(optuna.trial.create_trial(
        params={"lr": 0.1}, distributions={"lr": optuna.distributions.FloatDistribution(1e-2, 0.5, log=True)},
        value=1.0, intermediate_values={k: 1.0 for k in range(5)}))
    printed = []
    run_study(spec, methods=["sgd"], n_trials=2, echo=printed.append)
    trial = _trials(classp_home, "tiny.sgd")[1]
    assert trial.state == optuna.trial.TrialState.PRUNED
    run, = _runs(_client(classp_home), "trial")
    assert run.info.status == "KILLED" and run.data.tags[TAG_STATE] == "pruned"
    assert printed[0] == "tiny.sgd: 2 trials (1 finished, 1 pruned, 0 failed, 0 diverged); 1 run here"
    assert printed[1] == "  best: val_accuracy 100.00% (trial 0: lr=0.1)"


def test_confirm_uses_seeds_disjoint_from_tuning(classp_home):
    assert run_classp("study", "run", TINY_STUDY, "--n-trials", "2", "--method", "sgd").returncode == 0
    out = run_classp("study", "confirm", TINY_STUDY, "--method", "sgd")
    assert out.returncode == 0, out.stderr
    tuning, title, legend, header, row = out.stdout.strip().splitlines()
    assert tuning == ("hyperparameters chosen by the same-stream tuning protocol: trials ran on the "
                      "validation splits of every task of split-digits, the stream reported here "
                      "(the chosen values have seen every task)")
    assert title == "tiny: test accuracy (%) after the last task, n=2 confirmation seeds (7, 8, never used in tuning)"
    assert legend.startswith("per task: mean ± std over seeds; old tasks (all but the last) and all "
                             "tasks: mean ± std [95% bootstrap CI of the mean]")
    assert header.split() == ["method", "digits-01", "digits-23", "digits-45", "digits-67",
                              "digits-89", "old", "tasks", "all", "tasks"]
    assert row.startswith("sgd")
    client = _client(classp_home)
    confirm_runs = _runs(client, "confirm")
    seeds = sorted(int(r.data.params["seed"]) for r in confirm_runs)
    assert seeds == [7, 8]
    tuning_seeds = {int(r.data.params["seed"]) for r in _runs(client, "trial")}
    assert tuning_seeds == {0} and not tuning_seeds & set(seeds)
    parent, = _runs(client, "study")
    assert "confirm.test.acc.mean" in parent.data.metrics


def test_a_study_against_a_real_mlflow_server(classp_home, mlflow_server):
    out = run_classp("study", "run", TINY_STUDY, "--n-trials", "2", "--method", "classp",
                     "--tracking-uri", mlflow_server)
    assert out.returncode == 0, out.stderr
    client = MlflowClient(mlflow_server)
    exp = client.get_experiment_by_name("split-digits")
    runs = client.search_runs([exp.experiment_id], "tags.`classp.study` = 'tiny.classp'")
    parents = [r for r in runs if r.data.tags[TAG_KIND] == "study"]
    children = [r for r in runs if r.data.tags[TAG_KIND] == "trial"]
    assert len(parents) == 1 and len(children) == 2
    assert all(c.data.tags["mlflow.parentRunId"] == parents[0].info.run_id for c in children)
    folder = tempfile.mkdtemp()
    h = json.loads(Path(client.download_artifacts(children[0].info.run_id,
                                                  "sparsity/update_histograms.json", folder)).read_text())
    assert all(sum(p["counts"]) == p["numel"] for t in h["tasks"] for p in t["params"].values())


def test_an_unreachable_tracking_server_is_said_before_training(classp_home):
    assert run_classp("study", "run", TINY_STUDY, "--n-trials", "1", "--method", "sgd").returncode == 0
    out = run_classp("study", "run", TINY_STUDY, "--n-trials", "3", "--method", "sgd",
                     "--tracking-uri", f"http://127.0.0.1:{free_port()}")
    assert out.returncode == 2
    line, = out.stderr.strip().splitlines()
    assert line.startswith("classp: error: cannot reach the MLflow tracking store at http://127.0.0.1:")
    assert len(_trials(classp_home, "tiny.sgd")) == 1  # nothing ran, nothing lost
    assert len(_runs(_client(classp_home), "trial")) == 1


def test_an_unreachable_storage_is_said_before_training(classp_home):
    out = run_classp("study", "run", TINY_STUDY, "--n-trials", "1", "--storage",
                     f"postgresql://someone:secret@127.0.0.1:{free_port()}/optuna")
    assert out.returncode == 2
    line, = out.stderr.strip().splitlines()
    assert "cannot open the Optuna storage postgresql://someone:***@127.0.0.1" in line
    assert "secret" not in out.stderr


@pytest.mark.parametrize("edit, message", [
    (lambda t: t.replace('n_trials = 3', 'n_trials = 3\ncolour = "red"'), "study.colour: unknown key"),
    (lambda t: t.replace("low = 1e-2, high = 0.5", "low = 0.5, high = 1e-2"), "low 0.5 > high 0.01"),
    (lambda t: t.replace('methods = ["classp", "sgd"]', 'methods = ["classp", "lwf"]'), "unknown method 'lwf'"),
    (lambda t: t.replace('sequence = "split-digits"', 'sequence = "imagenet"'), "unknown sequence 'imagenet'"),
    (lambda t: t.replace("epochs = 1", 'epochs = "one"'), "run.epochs: expected an integer or a list"),
    (lambda t: t + '\n[tuning]\nprotocol = "first-tasks"\ntasks = 9\n', "tuning.tasks: split-digits has 5 tasks"),
    (lambda t: t + '\n[tuning]\nprotocol = "held-out-stream"\nstream = "split-digits"\n',
     "tuning.stream: is the reported stream split-digits itself"),
])
def test_a_bad_spec_is_one_line_and_leaves_existing_runs_intact(classp_home, tmp_path, edit, message):
    assert run_classp("study", "run", TINY_STUDY, "--n-trials", "1", "--method", "sgd").returncode == 0
    bad = tmp_path / "bad.toml"
    bad.write_text(edit(TINY_STUDY.read_text()))
    out = run_classp("study", "run", bad, "--n-trials", "2")
    assert out.returncode == 2
    line, = out.stderr.strip().splitlines()
    assert line.startswith(f"classp: error: {bad}: ") and message in line
    assert len(_trials(classp_home, "tiny.sgd")) == 1
    run, = _runs(_client(classp_home), "trial")
    assert run.info.status == "FINISHED"


def test_classp_ui_serves_the_local_store(classp_home):
    import subprocess
    import sys

    from support import stop_process, subprocess_env, wait_for_http

    assert run_classp("study", "run", TINY_STUDY, "--n-trials", "1", "--method", "sgd").returncode == 0
    port = free_port()
    ui = subprocess.Popen([sys.executable, "-m", "classp.cli", "ui", "--port", str(port)],
                          env=subprocess_env(CLASSP_HOME=str(classp_home)),
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_for_http(f"http://127.0.0.1:{port}/health", process=ui)
        client = MlflowClient(f"http://127.0.0.1:{port}")
        exp = client.get_experiment_by_name("split-digits")
        assert exp.tags["mlflow.experimentKind"] == "custom_model_development"  # the runs view
        runs = client.search_runs([exp.experiment_id], "tags.`classp.kind` = 'trial'")
        assert len(runs) == 1
        artifacts = [a.path for a in client.list_artifacts(runs[0].info.run_id, "sparsity")]
        assert "sparsity/update_histograms.png" in artifacts
    finally:
        stop_process(ui)


def test_the_shipped_specs_path_tpe_two_objectives_pareto_best_then_confirm(classp_home, tmp_path):
    """What every shipped spec does: TPE, the old/new objective, the best trial taken from
    the Pareto front, then confirm; each piece checked against an independent reading."""
    import optuna

    from classp.study import best_params, confirm, open_storage, run_study

    text = (TINY_STUDY.read_text().replace('methods = ["classp", "sgd"]', 'methods = ["sgd"]')
            .replace('name = "random"', 'name = "tpe"')
            .replace('[study]\n', '[study]\nobjective = "old-new"\n'))
    spec_path = tmp_path / "tpe.toml"
    spec_path.write_text(text)
    spec = load_spec(spec_path)
    assert spec.directions == ["maximize", "maximize"] and spec.sampler == "tpe"
    run_study(spec, n_trials=7, echo=lambda *_: None)  # TPE proposes after 5 startup trials

    storage = open_storage(None)
    study = optuna.load_study(study_name="tiny.sgd", storage=storage.optuna_storage)
    complete = [t for t in study.get_trials() if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 7
    client = MlflowClient(f"sqlite:///{classp_home / 'mlflow.db'}")
    for t in complete:
        folder = tmp_path / f"t{t.number}"
        folder.mkdir()
        matrix = json.loads(Path(client.download_artifacts(
            t.user_attrs["mlflow_run_id"], "accuracy_matrix.json", str(folder))).read_text())
        final = matrix["splits"][spec.tune_split][-1]
        # old: mean final accuracy on every task but the last; new: the last task's
        assert t.values == pytest.approx([sum(final[:-1]) / (len(final) - 1), final[-1]])

    params, chosen = best_params(study, spec)

    def dominated(a):
        return any(all(b >= a for b, a in zip(o.values, a.values)) and o.values != a.values
                   for o in complete)

    front = [t for t in complete if not dominated(t)]
    assert chosen.number in {t.number for t in front}
    assert sum(chosen.values) == max(sum(t.values) for t in front)
    assert params["lr"] == chosen.params["lr"]

    printed = []
    confirm(spec, echo=printed.append)
    table = printed[0]
    assert "sgd" in table and "n=2 confirmation seeds (7, 8, never used in tuning)" in table


AT_CHANCE_STUDY = """
[study]
name = "chance"
sequence = "split-digits"
methods = ["classp", "sgd"]
n_trials = 2
seeds = [0]
confirm_seeds = [7, 8]

[run]
epochs = 5
subsample = 0.3

[sampler]
name = "random"
seed = 0

[methods.classp]
# threshold 0, power 2, the decay on throughout: AdaGrad with eps inside the root
fixed = { schedule = "constant", threshold = 0.0, power = 2.0, decay = true }
[methods.classp.search]
lr = { low = 1e-2, high = 0.5, log = true }

[methods.sgd.search]
# steps far too small to learn anything in one epoch
lr = { low = 1e-9, high = 2e-9, log = true }
"""


def test_a_method_at_chance_is_flagged_and_classps_settings_are_named(classp_home, tmp_path):
    spec = tmp_path / "chance.toml"
    spec.write_text(AT_CHANCE_STUDY)
    out = run_classp("study", "run", spec, "--no-progress")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    classp_note = lines[lines.index(next(x for x in lines if x.startswith("chance.classp:"))) + 2]
    assert classp_note.startswith("  note: these settings make classp AdaGrad with eps inside the root")
    sgd_at = lines.index(next(x for x in lines if x.startswith("chance.sgd:")))
    assert lines[sgd_at + 2].startswith("  warning: the best trial's sgd is at chance: it learns its tasks to ")
    assert not any("classp is at chance" in x for x in lines)

    out = run_classp("study", "confirm", spec)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert any(x.startswith("sgd (at chance)") for x in lines)
    assert any(x.startswith("warning: sgd is at chance") for x in lines)
    # the only baseline is chosen as the best, and no verdict is drawn against it
    assert any(x.startswith("best baseline: sgd, chosen by the tuning objective") for x in lines)
    assert "verdict: none; sgd is at chance (see the warning above), which is a failed run to fix, " \
           "not a result to beat" in lines
    assert not any(x.startswith("verdict: classp keeps") or x.startswith("verdict: No difference")
                   for x in lines)
    assert lines[-1].startswith("note: classp's chosen settings are AdaGrad with eps inside the root")
    # the parent runs keep what the dashboard needs to say the same
    client = _client(classp_home)
    parents = {r.data.tags["classp.method"]: r for r in _runs(client, "study")}
    assert parents["classp"].data.tags["classp.reduces_to"].startswith("AdaGrad with eps inside the root")
    assert "classp.reduces_to" not in parents["sgd"].data.tags
    sgd = parents["sgd"].data.metrics
    # split-digits is class-incremental: ten classes
    assert sgd["confirm.test.learned"] < 0.28 and sgd["confirm.test.chance"] == pytest.approx(0.1)
