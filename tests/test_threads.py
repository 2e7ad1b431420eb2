"""Threads chosen on purpose (classp.threads): the choice from the cores and their load,
the user's OMP_NUM_THREADS winning, the real measurement of busy cores, and the choice a
real study records with every trial."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from mlflow import MlflowClient

from classp import threads
from classp.tracking import TAG_KIND
from classp.workers import worker_environments
from support import TINY_STUDY, subprocess_env


@pytest.fixture
def busy_process():
    """A real process keeping one core busy."""
    process = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    yield process
    process.kill()
    process.wait()


def test_an_idle_machine_gives_every_core_with_the_default_wait():
    choice = threads.choose(cores=2, busy=0.2, env={})
    assert (choice.threads, choice.wait_policy) == (2, None)
    assert choice.chosen_by == "2 cores, 0.2 busy, 1 worker"


def test_a_shared_machine_gets_a_passive_wait_and_the_same_threads():
    # The thread count never follows the load: a run's numbers may depend on it.
    for busy in (0.6, 1.0, 8.0):
        assert threads.choose(cores=2, busy=busy, env={}) == threads.ThreadChoice(
            2, "PASSIVE", f"2 cores, {busy:.1f} busy, 1 worker")
    # Each worker has its share of the cores; no process is left without a thread.
    choice = threads.choose(cores=16, busy=3.0, workers=2, env={})
    assert (choice.threads, choice.wait_policy) == (8, "PASSIVE")
    assert choice.environment() == {"OMP_NUM_THREADS": "8", "OMP_WAIT_POLICY": "PASSIVE",
                                    threads.CHOSEN_BY_VARIABLE: "16 cores, 3.0 busy, 2 workers"}
    assert threads.choose(cores=2, busy=3.0, workers=4, env={}) == threads.ThreadChoice(
        1, None, "2 cores, 3.0 busy, 4 workers")  # one thread does not wait


def test_the_users_omp_settings_win():
    choice = threads.choose(cores=16, busy=0.0, env={"OMP_NUM_THREADS": "3", "OMP_WAIT_POLICY": "active"})
    assert choice == threads.ThreadChoice(3, "active", "environment")
    # Not a count: ignored, and the choice is made as if it were not set.
    assert threads.choose(cores=4, busy=0.0, env={"OMP_NUM_THREADS": "many"}).threads == 4


def test_busy_cores_sees_a_real_busy_process(busy_process):
    if (os.cpu_count() or 1) < 2:
        pytest.skip("one core: the busy process and this one share it")
    assert threads.busy_cores(sample_seconds=0.5) >= 0.7


def test_workers_share_the_free_cores_unless_the_user_chose():
    envs = worker_environments(2, base={"CUDA_VISIBLE_DEVICES": ""})
    assert len({e["OMP_NUM_THREADS"] for e in envs}) == 1
    assert int(envs[0]["OMP_NUM_THREADS"]) == max(1, (os.cpu_count() or 1) // 2)
    assert envs[0][threads.CHOSEN_BY_VARIABLE].endswith("2 workers")
    kept = worker_environments(2, base={"CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "3"})
    assert [e["OMP_NUM_THREADS"] for e in kept] == ["3", "3"]
    assert kept[0][threads.CHOSEN_BY_VARIABLE] == "environment"


def _trial_params(home) -> dict[str, str]:
    client = MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("split-digits")
    runs = [r for r in client.search_runs([experiment.experiment_id])
            if r.data.tags.get(TAG_KIND) != "study"]
    assert len(runs) == 1
    return runs[0].data.params


def _study(home, **env):
    """One trial of a real study, in an environment without the suite's OpenMP settings."""
    plain = {k: v for k, v in subprocess_env(CLASSP_HOME=str(home)).items() if not k.startswith("OMP_")}
    done = subprocess.run([sys.executable, "-m", "classp.cli", "study", "run", str(TINY_STUDY),
                           "--method", "sgd", "--n-trials", "1", "--no-progress"],
                          capture_output=True, text=True, timeout=600, env={**plain, **env})
    assert done.returncode == 0, done.stderr
    return _trial_params(home)


def test_a_trial_records_the_threads_it_ran_with(tmp_path, busy_process):
    params = _study(tmp_path / "chosen")
    cores = os.cpu_count() or 1
    assert params["threads_chosen_by"].startswith(f"{cores} cores, ")
    # Every core, whatever the load; beside a busy process, idle threads sleep.
    assert int(params["threads"]) == cores
    assert params["omp_wait_policy"] == ("PASSIVE" if cores > 1 else "default")

    params = _study(tmp_path / "users", OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE")
    assert (params["threads"], params["omp_wait_policy"], params["threads_chosen_by"]) == \
        ("1", "PASSIVE", "environment")
