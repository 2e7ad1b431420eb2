"""The distributed path, for real: PostgreSQL for Optuna and MLflow, an `mlflow server` on
it, and `classp study run` workers as separate processes on loopback."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import optuna
import pytest
from mlflow import MlflowClient

from classp.tracking import TAG_KIND, TAG_STUDY
from support import (
    TINY_STUDY,
    Postgres,
    free_port,
    postgres_bin,
    run_classp,
    start_mlflow_server,
    stop_process,
    subprocess_env,
)


@pytest.fixture(scope="module")
def postgres():
    bin_dir = postgres_bin()
    if bin_dir is None:
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL is not installed: install it as the README says "
                        "(apt-get install postgresql)")
        pytest.skip("PostgreSQL is not installed (CI installs it)")
    server = Postgres(bin_dir)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def tracking_server(postgres, tmp_path_factory):
    folder = tmp_path_factory.mktemp("mlflow-pg")
    process, url = start_mlflow_server(folder, backend_uri=postgres.url("mlflow"))
    yield url
    stop_process(process)


def _spec(tmp_path, name: str, epochs: int = 1, subsample: float = 0.3):
    text = TINY_STUDY.read_text().replace('name = "tiny"', f'name = "{name}"')
    text = text.replace("epochs = 1", f"epochs = {epochs}").replace("subsample = 0.3", f"subsample = {subsample}")
    path = tmp_path / f"{name}.toml"
    path.write_text(text)
    return path


def _worker(spec, n_trials, storage, tracking, home, heartbeat=2):
    env = subprocess_env(CLASSP_HOME=str(home), CLASSP_HEARTBEAT_SECONDS=str(heartbeat))
    return subprocess.Popen(
        [sys.executable, "-m", "classp.cli", "study", "run", str(spec), "--method", "sgd",
         "--n-trials", str(n_trials), "--storage", storage, "--tracking-uri", tracking],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)


def _study(postgres, name):
    return optuna.load_study(study_name=f"{name}.sgd", storage=postgres.url())


def _runs(tracking, name):
    client = MlflowClient(tracking)
    exp = client.get_experiment_by_name("split-digits")
    return client.search_runs([exp.experiment_id], f"tags.`{TAG_STUDY}` = '{name}.sgd'", max_results=500)


def test_two_workers_share_one_study_exactly(postgres, tracking_server, tmp_path):
    spec = _spec(tmp_path, "two-workers")
    workers = [_worker(spec, 6, postgres.url(), tracking_server, tmp_path / f"w{i}") for i in range(2)]
    outputs = [w.communicate(timeout=600) for w in workers]
    for w, (_out, err) in zip(workers, outputs):
        assert w.returncode == 0, err
        lowered = err.lower()
        assert "Traceback" not in err and "deadlock" not in lowered
        assert "could not obtain lock" not in lowered and "database is locked" not in lowered
    trials = _study(postgres, "two-workers").get_trials()
    assert len(trials) == 6
    assert sorted(t.number for t in trials) == list(range(6))  # no duplicate numbers
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    runs = _runs(tracking_server, "two-workers")
    parents = [r for r in runs if r.data.tags[TAG_KIND] == "study"]
    children = {r.info.run_id: r for r in runs if r.data.tags[TAG_KIND] == "trial"}
    assert len(parents) == 1 and len(children) == 6
    for t in trials:
        run = children[t.user_attrs["mlflow_run_id"]]
        assert run.info.status == "FINISHED"
        assert run.data.tags["mlflow.parentRunId"] == parents[0].info.run_id


def _wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise TimeoutError(what)


def _running_with_run(postgres, name) -> bool:
    """Whether a trial of the study runs and has its MLflow run (the worker is mid-trial)."""
    try:
        trials = _study(postgres, name).get_trials()
    except KeyError:
        return False
    return any(t.state == optuna.trial.TrialState.RUNNING and "mlflow_run_id" in t.user_attrs
               for t in trials)


def test_a_killed_worker_s_trial_is_failed_by_heartbeat_and_retried(postgres, tracking_server, tmp_path):
    spec = _spec(tmp_path, "killed", epochs=40, subsample=1.0)  # trials of a few seconds
    victim = _worker(spec, 3, postgres.url(), tracking_server, tmp_path / "victim", heartbeat=1)

    _wait_for(lambda: _running_with_run(postgres, "killed"), 300, "no trial started")
    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait()
    running = [t for t in _study(postgres, "killed").get_trials()
               if t.state == optuna.trial.TrialState.RUNNING]
    assert len(running) == 1, f"expected the killed worker's one running trial, found {running}"
    killed = running[0]

    survivor = _worker(spec, 3, postgres.url(), tracking_server, tmp_path / "survivor", heartbeat=1)
    out, err = survivor.communicate(timeout=600)
    assert survivor.returncode == 0, err
    trials = _study(postgres, "killed").get_trials()
    by_number = {t.number: t for t in trials}
    assert by_number[killed.number].state == optuna.trial.TrialState.FAIL
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == killed.number]
    assert len(retries) == 1 and retries[0].state == optuna.trial.TrialState.COMPLETE
    assert retries[0].params == killed.params
    assert sum(t.state == optuna.trial.TrialState.COMPLETE for t in trials) == 3
    runs = {r.info.run_id: r for r in _runs(tracking_server, "killed")}
    killed_run = runs[killed.user_attrs["mlflow_run_id"]]
    assert killed_run.info.status == "FAILED"  # not left RUNNING
    assert not [r for r in runs.values() if r.info.status == "RUNNING" and r.data.tags[TAG_KIND] == "trial"]


def test_a_worker_stopped_past_its_heartbeat_drops_its_result_when_it_wakes(postgres, tracking_server, tmp_path):
    """SIGSTOP past the heartbeat: another worker fails and retries the trial; on SIGCONT
    the stopped worker finishes its run, says it drops the result, and goes on."""
    spec = _spec(tmp_path, "stopped", epochs=40, subsample=1.0)
    sleeper = _worker(spec, 3, postgres.url(), tracking_server, tmp_path / "sleeper", heartbeat=1)

    _wait_for(lambda: _running_with_run(postgres, "stopped"), 300, "no trial started")
    os.killpg(sleeper.pid, signal.SIGSTOP)
    stopped = next(t for t in _study(postgres, "stopped").get_trials()
                   if t.state == optuna.trial.TrialState.RUNNING)
    other = _worker(spec, 3, postgres.url(), tracking_server, tmp_path / "other", heartbeat=1)
    out, err = other.communicate(timeout=600)
    assert other.returncode == 0, err
    os.killpg(sleeper.pid, signal.SIGCONT)
    out, err = sleeper.communicate(timeout=600)
    assert sleeper.returncode == 0 and "Traceback" not in err, err
    assert (f"stopped.sgd: trial {stopped.number} was failed and retried by another worker while "
            f"this one was stopped; its result is dropped") in out
    trials = _study(postgres, "stopped").get_trials()
    assert sum(t.state == optuna.trial.TrialState.COMPLETE for t in trials) == 3
    assert not [t for t in trials if t.state == optuna.trial.TrialState.RUNNING]
    runs = _runs(tracking_server, "stopped")
    assert not [r for r in runs if r.info.status == "RUNNING"]
    parent, = [r for r in runs if r.data.tags[TAG_KIND] == "study"]
    assert parent.info.status == "FINISHED"  # not FAILED by the late worker
    complete = [t.user_attrs["mlflow_run_id"] for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(set(complete)) == 3


def test_losing_the_tracking_server_mid_study_loses_no_trial(postgres, tmp_path):
    folder = tmp_path / "mlflow"
    folder.mkdir()
    port = free_port()
    process, url = start_mlflow_server(folder, backend_uri=postgres.url("mlflow"), port=port)
    spec = _spec(tmp_path, "tracking-lost", epochs=25, subsample=1.0)
    worker = _worker(spec, 5, postgres.url(), url, tmp_path / "w")
    try:
        def finished_one():
            try:
                return any(t.state == optuna.trial.TrialState.COMPLETE
                           for t in _study(postgres, "tracking-lost").get_trials())
            except KeyError:
                return False

        _wait_for(finished_one, 300, "no trial finished")
        stop_process(process)
        before = [(t.number, t.values) for t in _study(postgres, "tracking-lost").get_trials()
                  if t.state == optuna.trial.TrialState.COMPLETE]
        out, err = worker.communicate(timeout=300)
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)
    assert worker.returncode == 2, err
    line, = err.strip().splitlines()[-1:]
    assert len(err.strip().splitlines()) == 1, err
    assert line.startswith(f"classp: error: lost the MLflow tracking store at {url}")
    after = {t.number: t for t in _study(postgres, "tracking-lost").get_trials()}
    for number, values in before:  # no finished trial lost
        assert after[number].state == optuna.trial.TrialState.COMPLETE and after[number].values == values

    process, url = start_mlflow_server(folder, backend_uri=postgres.url("mlflow"), port=port)
    try:
        resumed = _worker(spec, 5, postgres.url(), url, tmp_path / "w")
        out, err = resumed.communicate(timeout=600)
        assert resumed.returncode == 0, err
        trials = _study(postgres, "tracking-lost").get_trials()
        retried = {n for t in trials for n in t.system_attrs.get("retry_history", [])}
        counted = [t for t in trials if t.number not in retried]
        assert len(counted) == 5 and all(t.state == optuna.trial.TrialState.COMPLETE for t in counted)
        runs = [r for r in _runs(url, "tracking-lost") if r.data.tags[TAG_KIND] == "trial"]
        assert runs and all(r.info.status != "RUNNING" for r in runs)  # reconciled
    finally:
        stop_process(process)


def test_a_wrong_password_is_one_line_and_loses_nothing(postgres, tracking_server, tmp_path):
    spec = _spec(tmp_path, "password")
    ok = _worker(spec, 1, postgres.url(), tracking_server, tmp_path / "a")
    assert ok.wait(timeout=300) == 0
    out = run_classp("study", "run", spec, "--method", "sgd", "--n-trials", "2", "--storage",
                     postgres.url(password="wrong"), "--tracking-uri", tracking_server,
                     env={"CLASSP_HOME": str(tmp_path / "b")})
    assert out.returncode == 2
    line, = out.stderr.strip().splitlines()
    assert f"cannot open the Optuna storage postgresql://classp:***@127.0.0.1:{postgres.port}/optuna" in line
    assert "password authentication failed" in line and "wrong" not in line
    assert len(_study(postgres, "password").get_trials()) == 1


def test_a_wrong_database_or_an_unreachable_tracking_server_is_one_line(postgres, tmp_path):
    spec = _spec(tmp_path, "wrong-db")
    out = run_classp("study", "run", spec, "--storage", postgres.url("no_such_db"),
                     env={"CLASSP_HOME": str(tmp_path)})
    assert out.returncode == 2
    assert 'database "no_such_db" does not exist' in out.stderr.strip()
    out = run_classp("study", "run", spec, "--storage", postgres.url(),
                     "--tracking-uri", f"http://127.0.0.1:{free_port()}", env={"CLASSP_HOME": str(tmp_path)})
    assert out.returncode == 2
    line, = out.stderr.strip().splitlines()
    assert "cannot reach the MLflow tracking store at http://127.0.0.1:" in line


def test_workers_opening_an_empty_database_together_all_succeed(postgres):
    import psycopg

    with psycopg.connect(postgres.url("postgres"), autocommit=True) as conn:
        conn.execute("CREATE DATABASE fresh_schema")
    code = ("import sys; from classp.study import open_storage; "
            f"open_storage({postgres.url('fresh_schema')!r}); print('ok')")
    openers = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=subprocess_env())
               for _ in range(4)]
    for p in openers:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0 and out.strip() == "ok", err
