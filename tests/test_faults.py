"""Bad input and broken state against a study that already has a recorded trial.

The promise for each case: one line on stderr, exit status 2, no traceback, and nothing
already recorded changed: the Optuna journal byte for byte, the MLflow store's runs and
their states. One real study is run once for the module; every case works on a copy of
its home.
"""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from support import REPO, TINY_STUDY, run_classp, subprocess_env


@pytest.fixture(scope="module")
def recorded_home(tmp_path_factory) -> Path:
    """A home whose study `tiny.sgd` has one finished trial."""
    home = tmp_path_factory.mktemp("recorded") / "home"
    out = run_classp("study", "run", TINY_STUDY, "--n-trials", "1", "--method", "sgd",
                     env={"CLASSP_HOME": str(home)})
    assert out.returncode == 0, out.stderr
    return home


def _trials(home: Path, name: str) -> list:
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(
        str(home / "optuna.journal")))
    return optuna.load_study(study_name=name, storage=storage).get_trials()


def _runs(home: Path) -> list[tuple[str, str]]:
    """Every MLflow run's name and status, straight from the SQLite store."""
    with sqlite3.connect(home / "mlflow.db") as db:
        return sorted(db.execute("select name, status from runs").fetchall())


def _snapshot(home: Path) -> tuple[bytes, bytes]:
    return (home / "optuna.journal").read_bytes(), (home / "mlflow.db").read_bytes()


def _fails_in_one_line(out, *fragments: str) -> str:
    assert out.returncode == 2, out.stdout + out.stderr
    assert "Traceback" not in out.stderr
    line, = out.stderr.strip().splitlines()
    assert line.startswith("classp: error: ")
    for fragment in fragments:
        assert fragment in line, line
    return line


@pytest.fixture
def home(recorded_home, tmp_path) -> Path:
    copy = tmp_path / "home"
    shutil.copytree(recorded_home, copy)
    return copy


def _study(home: Path, spec=TINY_STUDY, *extra: str, env=None):
    return run_classp("study", "run", spec, "--n-trials", "2", "--method", "sgd", *extra,
                      env={"CLASSP_HOME": str(home), **(env or {})})


# ----------------------------------------------------------------------------------------
# Family 5: the file system
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", [["study", "run"], ["study", "confirm"], ["dashboard"],
                                     ["reproduce"]])
def test_a_folder_or_binary_garbage_as_the_spec(home, tmp_path, command):
    before = _snapshot(home)
    out = run_classp(*command, tmp_path, env={"CLASSP_HOME": str(home)})
    _fails_in_one_line(out, f"{tmp_path} is a directory; give the path of a .toml file")
    garbage = tmp_path / "garbage.toml"
    garbage.write_bytes(bytes(range(256)) * 4)
    out = run_classp(*command, garbage, env={"CLASSP_HOME": str(home)})
    _fails_in_one_line(out, f"{garbage} is not a UTF-8 text file")
    assert _snapshot(home) == before


@pytest.mark.parametrize("command", [["study", "run"], ["dashboard"], ["reproduce"]])
def test_a_spec_that_is_a_fifo_a_device_or_huge_is_refused_before_reading(home, tmp_path, command):
    """A FIFO would block the read forever; /dev/zero would never end."""
    before = _snapshot(home)
    fifo = tmp_path / "spec.toml"
    os.mkfifo(fifo)
    out = run_classp(*command, fifo, env={"CLASSP_HOME": str(home)}, timeout=120)
    _fails_in_one_line(out, f"{fifo} is not a regular file; give the path of a .toml file")
    out = run_classp(*command, "/dev/zero", env={"CLASSP_HOME": str(home)}, timeout=120)
    _fails_in_one_line(out, "/dev/zero is not a regular file")
    huge = tmp_path / "huge.toml"
    huge.write_text("# " + "x" * (2 << 20) + "\n")
    out = run_classp(*command, huge, env={"CLASSP_HOME": str(home)}, timeout=120)
    _fails_in_one_line(out, f"{huge} holds 2,097,155 bytes, more than a spec ever needs")
    assert _snapshot(home) == before


def test_an_error_that_echoes_a_huge_value_is_cut_in_the_middle(home, tmp_path):
    spec = tmp_path / "spec.toml"
    spec.write_text(TINY_STUDY.read_text().replace('sequence = "split-digits"',
                                                   f'sequence = "{"y" * 900_000}"'))
    before = _snapshot(home)
    line = _fails_in_one_line(_study(home, spec), "study.sequence: unknown sequence 'yyy",
                              "characters cut ...]", "allowed: mnist-fmnist")
    assert len(line) < 1200
    assert _snapshot(home) == before


def test_a_seed_beyond_64_bits_is_refused_before_anything_is_written(home, tmp_path):
    spec = tmp_path / "spec.toml"
    spec.write_text(TINY_STUDY.read_text().replace("seeds = [0]", "seeds = [18446744073709551616]"))
    before = _snapshot(home)
    _fails_in_one_line(_study(home, spec), "study.seeds: a seed must be an integer from 0 to 2**63 - 1")
    assert _snapshot(home) == before
    _fails_in_one_line(run_classp("run", "--seed", "-3", env={"CLASSP_HOME": str(home)}),
                       "a seed must be an integer from 0 to 2**63 - 1, got -3")


def test_a_classp_home_that_is_a_file_or_not_writable(tmp_path):
    a_file = tmp_path / "home"
    a_file.write_text("not a folder")
    _fails_in_one_line(_study(a_file), f"CLASSP_HOME {a_file} is a file, not a folder",
                       "point CLASSP_HOME at a writable folder")
    assert a_file.read_text() == "not a folder"
    # sysfs takes no new files, not even from root (a chmod would not stop root).
    _fails_in_one_line(_study(Path("/sys")), "CLASSP_HOME /sys is not writable")
    _fails_in_one_line(run_classp("ui", env={"CLASSP_HOME": str(a_file)}), "is a file, not a folder")


def test_a_corrupt_mlflow_store_is_named_and_left_as_it_is(home):
    db = home / "mlflow.db"
    damaged = bytearray(db.read_bytes())
    damaged[100:4100] = b"\x00garbage" * 500  # page 1: the schema
    db.write_bytes(bytes(damaged))
    before = _snapshot(home)
    _fails_in_one_line(_study(home), f"the MLflow store {db} cannot be read", "it was left as it is")
    assert _snapshot(home) == before
    db.write_bytes(b"this is not a database" * 100)
    before = _snapshot(home)
    _fails_in_one_line(_study(home), "cannot be read (file is not a database)")
    assert _snapshot(home) == before


def test_a_garbage_line_inside_the_journal_is_named_and_left_as_it_is(home):
    journal = home / "optuna.journal"
    lines = journal.read_bytes().splitlines(keepends=True)
    journal.write_bytes(b"".join(lines[:2]) + b"{not json\n" + b"".join(lines[2:]))
    before = _snapshot(home)
    _fails_in_one_line(_study(home), f"the Optuna journal {journal} cannot be read at line 3",
                       "it was left as it is")
    assert _snapshot(home) == before


@pytest.mark.parametrize("uri, message", [
    ("foo://bar", "unsupported tracking URI foo://bar; use one of sqlite://"),
    ("s3://bucket/mlflow", "unsupported tracking URI s3://bucket/mlflow"),
])
def test_a_tracking_uri_of_an_unknown_scheme(home, uri, message):
    before = _snapshot(home)
    _fails_in_one_line(_study(home, TINY_STUDY, "--tracking-uri", uri), message)
    assert _snapshot(home) == before


def test_an_sqlite_tracking_store_under_a_file(home, tmp_path):
    a_file = tmp_path / "plain-file"
    a_file.write_text("x")
    out = _study(home, TINY_STUDY, "--tracking-uri", f"sqlite:///{a_file}/mlflow.db")
    _fails_in_one_line(out, f"the tracking store's folder {a_file} is a file, not a folder")


def test_dashboard_out_that_is_a_folder_or_under_a_file(home, tmp_path):
    spec = REPO / "dashboards" / "classp-vs-ewc.toml"
    before = _snapshot(home)
    out = run_classp("dashboard", spec, "--out", tmp_path, env={"CLASSP_HOME": str(home)})
    _fails_in_one_line(out, f"--out {tmp_path} is a folder; give a file name")
    a_file = tmp_path / "plain-file"
    a_file.write_text("x")
    out = run_classp("dashboard", spec, "--out", a_file / "page.html", env={"CLASSP_HOME": str(home)})
    _fails_in_one_line(out, f"--out: the folder {a_file} is a file, not a folder")
    assert _snapshot(home) == before


# ----------------------------------------------------------------------------------------
# Families 3, 4 and 8: settings checked before any trial is recorded
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("edit, message", [
    (lambda t: t.replace("[run]\n", '[run]\ndevice = "tpu"\n'), "[run] for sgd: unknown device 'tpu'"),
    (lambda t: t.replace("[run]\n", '[run]\nmodel = "paper-transformer"\n'),
     "[run] for sgd: model 'paper-transformer' needs text tasks"),
    (lambda t: t.replace("epochs = 1", "epochs = [1, 2]"),
     "[run] for sgd: 2 epoch counts given for 5 tasks"),
    (lambda t: t.replace("seed = 0\n", "seed = -1\n"), "sampler.seed: must be between 0 and 2**32 - 1"),
    (lambda t: t + '\n[pruner]\nname = "median"\nn_startup_trials = -3\n',
     "pruner.n_startup_trials: must be 0 or more, got -3"),
    (lambda t: t.replace("[methods.classp.search]\nlr = { low = 1e-2, high = 0.5, log = true }",
                         "[methods.classp.search]\nlr = { choices = [0.2, -2.0] }"),
     "methods.classp.search.lr: lr must be a positive number, got -2.0"),
    (lambda t: t.replace("power = { choices = [1.0, 2.0] }", 'power = { choices = [1.0, "x"] }'),
     "methods.classp.search.power: method 'classp': power must be a finite number, got 'x'"),
    (lambda t: t.replace("[methods.sgd.search]\nlr = { low = 1e-2, high = 0.5, log = true }",
                         "[methods.sgd.search]\nlr = { choices = [0.1, 0.2] }"),
     "study 'tiny.sgd' already has trials where lr was a log range [0.01, 0.5]; the spec now "
     "says one of [0.1, 0.2]: give the study a new name"),
    (lambda t: t.replace('name = "tiny"', 'name = "tiny"\nobjective = "old-new"'),
     "study 'tiny.sgd' has 1 objective(s); the spec's objective 'old-new' has 2"),
])
def test_settings_that_cannot_run_fail_before_a_trial_is_recorded(home, tmp_path, edit, message):
    spec = tmp_path / "spec.toml"
    spec.write_text(edit(TINY_STUDY.read_text()))
    assert spec.read_text() != TINY_STUDY.read_text()
    before, runs = _snapshot(home), _runs(home)
    _fails_in_one_line(_study(home, spec), message)
    assert _snapshot(home) == before and _runs(home) == runs


# ----------------------------------------------------------------------------------------
# Family 7: data that is malformed rather than missing, met by a study
# ----------------------------------------------------------------------------------------


def _truncate(folder: Path) -> Path:
    images = folder / "MNIST" / "raw" / "train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:-100])
    return images


def _garbage_header(folder: Path) -> Path:
    images = folder / "MNIST" / "raw" / "train-images-idx3-ubyte"
    images.write_bytes(b"\x12\x34" + images.read_bytes()[2:])
    return images


def _empty_csv(folder: Path) -> Path:
    (folder / "imdb.csv").write_text("text,label\nfine,0\n")
    (folder / "financial_phrasebank.csv").write_text("")
    return folder / "financial_phrasebank.csv"


def _bad_label(folder: Path) -> Path:
    (folder / "imdb.csv").write_text("text,label\nfine,0\n")
    (folder / "financial_phrasebank.csv").write_text("sentence,label\nup,1\ndown,7\n")
    return folder / "financial_phrasebank.csv"


@pytest.mark.parametrize("sequence, damage, message", [
    ("split-mnist", _truncate, "the file is truncated or corrupt"),
    ("split-mnist", _garbage_header, "is not an idx file"),
    ("fpb-imdb", _empty_csv, "is empty"),
    ("fpb-imdb", _bad_label, "row 1: label 7 is not one of 0, 1, 2"),
])
def test_malformed_data_is_named_before_a_trial_is_recorded(home, tmp_path, sequence, damage,
                                                             message):
    from support import make_mnist_like

    data = tmp_path / "data"
    make_mnist_like(data / "MNIST" / "raw")
    bad_file = damage(data)
    spec = tmp_path / "spec.toml"
    spec.write_text(TINY_STUDY.read_text().replace('sequence = "split-digits"',
                                                   f'sequence = "{sequence}"')
                    .replace("[run]\n", f'[run]\ndata_dir = "{data}"\n'))
    before, runs = _snapshot(home), _runs(home)
    _fails_in_one_line(_study(home, spec), str(bad_file), message)
    assert _snapshot(home) == before and _runs(home) == runs


@pytest.mark.parametrize("value", ["abc", "0", "-5", "1.5"])
def test_a_bad_heartbeat_setting(home, value):
    before = _snapshot(home)
    _fails_in_one_line(_study(home, env={"CLASSP_HEARTBEAT_SECONDS": value}),
                       f"CLASSP_HEARTBEAT_SECONDS must be a whole number of seconds >= 1, got '{value}'")
    assert _snapshot(home) == before


def test_a_search_range_that_only_moved_its_bounds_resumes(home, tmp_path):
    """The control of the changed-space case: new bounds are not a new kind of space."""
    spec = tmp_path / "spec.toml"
    spec.write_text(TINY_STUDY.read_text().replace(
        "[methods.sgd.search]\nlr = { low = 1e-2, high = 0.5, log = true }",
        "[methods.sgd.search]\nlr = { low = 1e-3, high = 0.4, log = true }"))
    out = _study(home, spec)
    assert out.returncode == 0, out.stderr
    assert ("sgd trial 1", "FINISHED") in _runs(home)


# ----------------------------------------------------------------------------------------
# Family 1: Ctrl-C leaves no run RUNNING and no traceback
# ----------------------------------------------------------------------------------------


def _mlflow_runs_when_ready(home: Path, deadline: float) -> list:
    while time.monotonic() < deadline:
        try:
            runs = _runs(home)
        except sqlite3.Error:
            runs = []
        if any(name == "sgd trial 0" for name, _ in runs):
            return runs
        time.sleep(0.2)
    raise AssertionError("the study never started its first trial")


def _long_study(tmp_path: Path, *extra: str) -> tuple[subprocess.Popen, Path]:
    """`classp study run` of the tiny study with trials long enough that a signal lands
    inside one, started as a real process once its first trial runs."""
    home = tmp_path / "home"
    spec = tmp_path / "spec.toml"
    spec.write_text(TINY_STUDY.read_text().replace("epochs = 1", "epochs = 200"))
    process = subprocess.Popen([sys.executable, "-m", "classp.cli", "study", "run", str(spec),
                                "--method", "sgd", *extra],
                               env=subprocess_env(CLASSP_HOME=str(home)),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _mlflow_runs_when_ready(home, time.monotonic() + 180)
    return process, home


def test_ctrl_c_mid_study_ends_the_parent_and_the_trial_runs_and_resume_finishes(tmp_path):
    process, home = _long_study(tmp_path, "--n-trials", "2")
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 130 and "Traceback" not in stderr, stderr
    assert stderr.strip().splitlines()[-1] == "classp: interrupted"
    states = dict(_runs(home))
    assert states == {"tiny.sgd": "KILLED", "sgd trial 0": "FAILED"}  # nothing left RUNNING
    out = run_classp("study", "run", TINY_STUDY, "--method", "sgd", "--n-trials", "1",
                     env={"CLASSP_HOME": str(home)})
    assert out.returncode == 0, out.stderr
    states = dict(_runs(home))
    assert states["tiny.sgd"] == "FINISHED" and "RUNNING" not in states.values()


@pytest.mark.parametrize("signum, status", [(signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_sigterm_and_sighup_mid_study_end_every_run_as_ctrl_c_does(tmp_path, signum, status):
    """How `kill`, `docker stop`, `timeout` and Slurm stop a job, and a closed terminal."""
    process, home = _long_study(tmp_path, "--n-trials", "2")
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == status and "Traceback" not in stderr, stderr
    assert stderr.strip().splitlines()[-1] == f"classp: interrupted by {signal.Signals(signum).name}"
    assert dict(_runs(home)) == {"tiny.sgd": "KILLED", "sgd trial 0": "FAILED"}  # nothing RUNNING
    # the interrupted trial is failed and queued again (its parameters), as Ctrl-C does
    assert [t.state for t in _trials(home, "tiny.sgd")] == [optuna.trial.TrialState.FAIL,
                                                          optuna.trial.TrialState.WAITING]
    out = run_classp("study", "run", TINY_STUDY, "--method", "sgd", "--n-trials", "2",
                     env={"CLASSP_HOME": str(home)})
    assert out.returncode == 0, out.stderr
    states = dict(_runs(home))
    assert "RUNNING" not in states.values()
    done = [t.state for t in _trials(home, "tiny.sgd")]
    assert done.count(optuna.trial.TrialState.COMPLETE) == 2  # resumed to exactly N
    assert optuna.trial.TrialState.RUNNING not in done and optuna.trial.TrialState.WAITING not in done


def test_sigterm_to_a_workers_parent_reaches_its_workers(tmp_path):
    process, home = _long_study(tmp_path, "--n-trials", "6", "--workers", "2")
    process.send_signal(signal.SIGTERM)
    out, stderr = process.communicate(timeout=120)
    assert process.returncode == 143 and "Traceback" not in stderr, stderr
    assert stderr.strip().splitlines()[-1] == "classp: interrupted by SIGTERM"
    time.sleep(3)  # a worker still running would start its next trial now
    states = dict(_runs(home))
    assert "RUNNING" not in states.values(), (states, out, stderr)
    trials = _trials(home, "tiny.sgd")
    assert not any(t.state == optuna.trial.TrialState.RUNNING for t in trials)
    assert len(trials) <= 2  # no worker went on to start new trials


@pytest.mark.parametrize("delay", [0.3, 1.0, 2.0])
def test_ctrl_c_while_the_command_starts_is_one_line(tmp_path, delay):
    """In the first seconds the command imports torch, MLflow and Optuna."""
    process = subprocess.Popen([sys.executable, "-m", "classp.cli", "study", "run", str(TINY_STUDY)],
                               env=subprocess_env(CLASSP_HOME=str(tmp_path / "home")),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(delay)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert "Traceback" not in stderr, stderr
    assert process.returncode == 130
    assert stderr.strip().splitlines() == ["classp: interrupted"]


# ----------------------------------------------------------------------------------------
# Output streams: a closed pipe is a quiet exit; an unwritable stdout is one line
# ----------------------------------------------------------------------------------------


def _read_one_line_then_close(args: list[str], home: Path) -> tuple[str, int, str]:
    """What `classp ARGS | head -1` does to the command: read a line, close the pipe."""
    process = subprocess.Popen([sys.executable, "-m", "classp.cli", *args],
                               env=subprocess_env(CLASSP_HOME=str(home)),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = process.stdout.readline()
    process.stdout.close()
    stderr = process.stderr.read()
    return first, process.wait(timeout=300), stderr


def test_a_closed_pipe_ends_classp_list_quietly(tmp_path):
    """`classp list | true`: the reader is gone before the first line (a short output is
    written whole into the pipe's buffer if the reader is still there)."""
    process = subprocess.Popen([sys.executable, "-m", "classp.cli", "list"], env=subprocess_env(),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    process.stdout.close()
    stderr = process.stderr.read()
    assert process.wait(timeout=120) == 141 and stderr == ""


def test_a_closed_pipe_mid_study_stops_it_as_ctrl_c_does_and_it_resumes(tmp_path):
    home = tmp_path / "home"
    first, status, stderr = _read_one_line_then_close(
        ["study", "run", str(TINY_STUDY), "--n-trials", "2"], home)
    assert first.startswith("tiny.classp: 2 trials")
    assert status == 141 and "Traceback" not in stderr, stderr
    # the failure surfaces at the first print after the close (each print is flushed),
    # outside any trial: nothing is left RUNNING and nothing counts as failed
    states = dict(_runs(home))
    assert "RUNNING" not in states.values() and states["tiny.classp"] == "FINISHED"
    assert not any(t.state == optuna.trial.TrialState.FAIL for t in _trials(home, "tiny.classp"))
    out = run_classp("study", "run", TINY_STUDY, "--n-trials", "2", env={"CLASSP_HOME": str(home)})
    assert out.returncode == 0, out.stderr
    for method in ("classp", "sgd"):
        done = [t.state for t in _trials(home, f"tiny.{method}")]
        assert done.count(optuna.trial.TrialState.COMPLETE) == 2


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="no /dev/full on this system")
def test_standard_output_that_cannot_be_written_is_one_line(tmp_path):
    with open("/dev/full", "w") as full:
        out = subprocess.run([sys.executable, "-m", "classp.cli", "list"], stdout=full,
                             stderr=subprocess.PIPE, text=True, env=subprocess_env(), timeout=120)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "classp: error: cannot write to standard output: No space left on device; redirect it "
        "somewhere writable"]


# ----------------------------------------------------------------------------------------
# Stores in states MLflow allows, and outputs that are not text
# ----------------------------------------------------------------------------------------


def test_a_study_whose_experiment_is_in_mlflows_trash_is_refused_before_writing(home):
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("split-digits")
    client.delete_experiment(experiment.experiment_id)
    before = _snapshot(home)
    for command in (["study", "run", TINY_STUDY, "--n-trials", "2", "--method", "sgd"],
                    ["study", "confirm", TINY_STUDY, "--method", "sgd"]):
        out = run_classp(*command, env={"CLASSP_HOME": str(home)})
        _fails_in_one_line(out, "the MLflow experiment 'split-digits'", "is in MLflow's trash",
                           f"mlflow experiments restore --experiment-id {experiment.experiment_id}")
    assert _snapshot(home) == before
    client.restore_experiment(experiment.experiment_id)
    assert _study(home).returncode == 0  # restored, the study goes on


def test_confirm_after_the_spec_gained_a_searched_parameter_is_one_line(home, tmp_path):
    spec = tmp_path / "spec.toml"
    spec.write_text(TINY_STUDY.read_text().replace(
        "[methods.sgd.search]\nlr = { low = 1e-2, high = 0.5, log = true }",
        "[methods.sgd.search]\nlr = { low = 1e-2, high = 0.5, log = true }\n"
        "momentum = { low = 0.0, high = 0.9 }"))
    before = _snapshot(home)
    out = run_classp("study", "confirm", spec, "--method", "sgd", env={"CLASSP_HOME": str(home)})
    _fails_in_one_line(out, "methods.sgd.search.momentum: the best trial (trial 0) of study tiny.sgd "
                            "has no momentum, which the spec now searches")
    assert _snapshot(home) == before


def test_reproduce_from_logs_given_a_binary_file_is_one_line(tmp_path):
    binary = tmp_path / "run.log"
    binary.write_bytes(bytes(range(256)) * 8)
    for spec in (REPO / "studies" / "paper-table1.toml", REPO / "studies" / "hsu2018-split-mnist.toml"):
        out = run_classp("reproduce", spec, "--from-logs", binary)
        _fails_in_one_line(out, f"cannot read {binary}: not a UTF-8 text file (binary data?); "
                                f"give the files `classp reproduce` wrote")


# ----------------------------------------------------------------------------------------
# Data files that lie: counts, labels and gzip checked at load
# ----------------------------------------------------------------------------------------


def _lying_mnist(root: Path, lie: str) -> Path:
    """MNIST-format files in `root`/MNIST/raw, with one lie told."""
    import gzip

    import numpy as np

    from support import make_mnist_like, write_idx

    raw = root / "MNIST" / "raw"
    make_mnist_like(raw)
    labels = raw / "train-labels-idx1-ubyte"
    values = np.frombuffer(labels.read_bytes()[8:], dtype=np.uint8)
    if lie == "fewer labels":
        write_idx(labels, values[:-10])
    elif lie == "more labels":
        write_idx(labels, np.concatenate([values, values[:10]]))
    elif lie == "label 255":
        flipped = values.copy()
        flipped[7] = 255
        write_idx(labels, flipped)
    elif lie in ("garbage gz", "truncated gz"):
        data = labels.read_bytes()
        labels.unlink()
        packed = gzip.compress(data)
        (raw / "train-labels-idx1-ubyte.gz").write_bytes(
            b"not gzip at all" * 10 if lie == "garbage gz" else packed[: len(packed) // 2])
    return labels


@pytest.mark.parametrize("lie, message", [
    ("fewer labels", "train-images-idx3-ubyte holds 200 images but train-labels-idx1-ubyte 190 labels"),
    ("more labels", "train-images-idx3-ubyte holds 200 images but train-labels-idx1-ubyte 210 labels"),
    ("label 255", "train-labels-idx1-ubyte holds 1 label(s) outside 0-9 (the first: 255)"),
    ("garbage gz", "train-labels-idx1-ubyte.gz cannot be unpacked"),
    ("truncated gz", "train-labels-idx1-ubyte.gz cannot be unpacked"),
])
def test_data_files_that_lie_are_one_line_for_a_run_and_a_study(home, tmp_path, lie, message):
    _lying_mnist(tmp_path / "data", lie)
    out = run_classp("run", "--sequence", "split-mnist", "--data-dir", tmp_path / "data",
                     "--no-progress", env={"CLASSP_HOME": str(home)})
    _fails_in_one_line(out, message, "replace")
    spec = tmp_path / "spec.toml"
    spec.write_text(TINY_STUDY.read_text().replace('sequence = "split-digits"', 'sequence = "split-mnist"'))
    before = _snapshot(home)
    out = _study(home, spec, env={"CLASSP_DATA": str(tmp_path / "data")})
    _fails_in_one_line(out, message)
    assert _snapshot(home) == before  # nothing recorded changed
    assert not list((tmp_path / "data" / "MNIST" / "raw").glob(".*.part"))  # no half-written file


def test_classp_data_refuses_labels_out_of_range_before_writing(tmp_path):
    _lying_mnist(tmp_path / "src", "label 255")
    out = run_classp("data", "mnist", tmp_path / "src" / "MNIST" / "raw", "--data-dir", tmp_path / "data")
    _fails_in_one_line(out, "train-labels-idx1-ubyte holds 1 label(s) outside 0-9 (the first: 255)")
    assert not (tmp_path / "data").exists()


# ----------------------------------------------------------------------------------------
# A full disk: one line, nothing RUNNING, the interrupted trial queued, resumed to exactly N
# ----------------------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path):
    """A tmpfs of a given size, mounted for the test (root only; CI runs as root)."""
    if os.geteuid() != 0:
        if os.environ.get("CI"):
            pytest.fail("the full-disk tests mount a tmpfs and need root, which CI has")
        pytest.skip("mounting a tmpfs needs root")
    mount = tmp_path / "disk"
    mount.mkdir()

    def sized(size: str) -> Path:
        options = f"size={size}" if not os.path.ismount(mount) else f"remount,size={size}"
        subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mount)], check=True)
        return mount

    yield sized
    if os.path.ismount(mount):
        # lazy: a store connection the test still holds (until garbage collection) must
        # not keep the mount busy
        subprocess.run(["umount", "-l", str(mount)], check=True)


DISK_FULL = "no space left in {home} ("


def test_a_full_disk_at_start_is_one_line_and_the_command_resumes_once_there_is_room(small_disk):
    home = small_disk("600k") / "home"
    out = _study(home)
    line = _fails_in_one_line(out, DISK_FULL.format(home=home), "free at least 10 MB there",
                              "run the same command again")
    assert "restore it from a backup" not in line  # not called a damaged store
    small_disk("50m")
    out = _study(home)
    assert out.returncode == 0, out.stderr
    assert [t.state for t in _trials(home, "tiny.sgd")] == [optuna.trial.TrialState.COMPLETE] * 2


def test_a_full_disk_mid_study_queues_the_trial_and_resume_reaches_exactly_n(small_disk):
    home = small_disk("2200k") / "home"
    n = 20
    out = run_classp("study", "run", TINY_STUDY, "--n-trials", n, "--method", "sgd",
                     env={"CLASSP_HOME": str(home)})
    _fails_in_one_line(out, DISK_FULL.format(home=home), "the interrupted one is queued to run again")
    states = dict(_runs(home))
    assert "RUNNING" not in states.values()
    assert states["tiny.sgd"] == "KILLED"  # interrupted, not FAILED
    trials = _trials(home, "tiny.sgd")
    done = sum(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert 0 < done < n
    assert trials[-1].state == optuna.trial.TrialState.WAITING  # the interrupted trial, queued
    small_disk("50m")
    out = run_classp("study", "run", TINY_STUDY, "--n-trials", n, "--method", "sgd",
                     env={"CLASSP_HOME": str(home)})
    assert out.returncode == 0, out.stderr
    trials = _trials(home, "tiny.sgd")
    assert sum(t.state == optuna.trial.TrialState.COMPLETE for t in trials) == n
    assert not any(t.state in (optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.WAITING)
                   for t in trials)
    assert "RUNNING" not in dict(_runs(home)).values()
