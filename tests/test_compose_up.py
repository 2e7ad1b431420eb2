"""`docker compose up` for real, as the README's tracking-stack section tells a user: the
project image built, the stack up on fresh volumes with `--wait`, two scaled workers
running a small study without anyone typing a password, everything landing in PostgreSQL
(through Optuna) and MLflow (runs and their sparsity PNGs, served by the server), the runs
browsed in MLflow's model-training view, `down` then `up` losing nothing, then `down -v`.

It runs as a compose project of its own (`classp-test`: its containers and volumes are its
own, a user's stack is never touched) with a generated password in an env file of its own.
Needs a Docker daemon with compose v2: skipped without one, a failure in CI (CI=true).
The suite runs these tests last (conftest.py), so that CI can prepare the daemon and the
image in the background meanwhile.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from support import REPO, TINY_STUDY, browse_runs_as_a_user

PROJECT = "classp-test"
TRIALS_PER_METHOD = 2
METHODS = ("classp", "sgd")
DAEMON_WAIT_S = 900  # CI starts the daemon and builds the base images in the background

# The commands the README's tracking-stack section gives, run here as written (the test
# adds only its project name and env file, through the environment).
UP = "docker compose up -d --wait"
WORKERS = "docker compose up --scale worker=2 worker"
STOP = "docker compose --profile worker down"

pytestmark = pytest.mark.compose


def _compose_environment(env_file: Path, studies: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("POSTGRES_", "COMPOSE_"))}
    env.update(COMPOSE_PROJECT_NAME=PROJECT, COMPOSE_ENV_FILES=str(env_file),
               CLASSP_STUDIES=str(studies), CLASSP_STUDY="studies/compose-test.toml")
    return env


def _wait_for_docker() -> None:
    """A skip without Docker, except in CI, where the daemon may still be starting."""
    in_ci = bool(os.environ.get("CI"))
    if shutil.which("docker") is None:
        if in_ci:
            pytest.fail("docker is not installed: CI needs a Docker daemon with compose v2")
        pytest.skip("Docker is not installed (CI runs these tests)")
    deadline = time.monotonic() + (DAEMON_WAIT_S if in_ci else 0)
    while True:
        info = subprocess.run(["docker", "info"], capture_output=True, text=True)
        compose = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True)
        if info.returncode == 0 and compose.returncode == 0:
            return
        if time.monotonic() >= deadline:
            reason = (info.stderr or compose.stderr).strip().splitlines()[-1:]
            if in_ci:
                pytest.fail(f"no Docker daemon with compose v2 after {DAEMON_WAIT_S} s: {reason} "
                            f"(CI's setup log: test-artifacts/docker-setup.log)")
            pytest.skip(f"no Docker daemon with compose v2: {reason}")
        time.sleep(5)


class Stack:
    def __init__(self, env: dict[str, str]):
        self.env = env

    def run(self, command: str, *extra: str, timeout: float = 600, check: bool = True):
        done = subprocess.run([*command.split(), *extra], cwd=REPO, env=self.env,
                              capture_output=True, text=True, timeout=timeout)
        if check:
            assert done.returncode == 0, f"{command} {' '.join(extra)}: {done.stderr[-3000:]}"
        return done

    def services(self) -> dict[str, list[dict]]:
        out = self.run("docker compose --profile worker ps -a --format json").stdout
        rows = [json.loads(line) for line in out.splitlines() if line.strip()]
        if len(rows) == 1 and isinstance(rows[0], list):  # older compose: one JSON array
            rows = rows[0]
        found: dict[str, list[dict]] = {}
        for row in rows:
            found.setdefault(row["Service"], []).append(row)
        return found

    def in_a_worker(self, code: str) -> str:
        """Python in a worker container, on the stack's network, with the workers' URLs."""
        done = self.run("docker compose run --rm --no-deps worker python -c", code, timeout=300)
        return done.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    _wait_for_docker()
    folder = tmp_path_factory.mktemp("compose")
    env_file = folder / "env"
    env_file.write_text(f"POSTGRES_USER=classp\nPOSTGRES_PASSWORD={secrets.token_hex(16)}\n")
    studies = folder / "studies"
    studies.mkdir()
    spec = TINY_STUDY.read_text().replace('name = "tiny"', 'name = "compose-test"')
    spec = spec.replace("n_trials = 3", f"n_trials = {TRIALS_PER_METHOD}")
    (studies / "compose-test.toml").write_text(spec)
    studies.chmod(0o755)  # read inside the containers by their non-root user
    stack = Stack(_compose_environment(env_file, studies))
    stack.run("docker compose --profile worker down -v --remove-orphans")  # a past run's leftovers
    stack.run("docker compose build", timeout=1800)
    yield stack
    stack.run("docker compose --profile worker down -v --remove-orphans", check=False)


def _trials(stack: Stack) -> dict[str, list[str]]:
    code = ("import json, os, optuna; s = os.environ['CLASSP_STORAGE']; "
            "print(json.dumps({x.study_name: [t.state.name for t in "
            "optuna.load_study(study_name=x.study_name, storage=s).trials] "
            "for x in optuna.get_all_study_summaries(s)}))")
    return json.loads(stack.in_a_worker(code))


def _trial_runs():
    from mlflow import MlflowClient

    client = MlflowClient("http://127.0.0.1:5000")
    experiment = client.get_experiment_by_name("split-digits")
    runs = client.search_runs([experiment.experiment_id], "tags.`classp.kind` = 'trial'")
    return client, runs


def test_the_readme_gives_these_commands():
    section = (REPO / "README.md").read_text().split("## The tracking stack", 1)[1].split("\n## ", 1)[0]
    for command in (UP, STOP, "cp .env.example .env", "docker compose run --rm worker"):
        assert command in section, f"the README's tracking-stack section lacks {command!r}"
    assert "docker compose up --scale worker=4 worker" in section
    assert "POSTGRES_PASSWORD@" not in section  # workers take the URL from the compose file


def test_a_fresh_up_wait_succeeds_with_every_service_healthy_on_loopback(stack):
    stack.run(UP, timeout=600)  # exit 1 when the dashboard crash-looped on an empty database
    services = stack.services()
    for name in ("postgres", "mlflow", "optuna-dashboard"):
        (row,) = services[name]
        assert row["State"] == "running" and row["Health"] == "healthy", row
    (schema,) = services["optuna-schema"]
    assert schema["State"] == "exited" and schema["ExitCode"] == 0, schema
    published = {(p["URL"], p["PublishedPort"]) for rows in services.values() for row in rows
                 for p in row.get("Publishers") or [] if p.get("PublishedPort")}
    assert published == {("127.0.0.1", 5000), ("127.0.0.1", 8080)}, published


def test_two_scaled_workers_run_exactly_the_trials_asked_and_return(stack):
    done = stack.run(WORKERS, timeout=900)  # returns once both workers have finished
    assert "Traceback" not in done.stdout + done.stderr
    workers = stack.services()["worker"]
    assert len(workers) == 2 and all(w["ExitCode"] == 0 for w in workers), workers
    trials = _trials(stack)
    assert trials == {f"compose-test.{m}": ["COMPLETE"] * TRIALS_PER_METHOD for m in METHODS}
    client, runs = _trial_runs()
    names = sorted(run.info.run_name for run in runs)
    assert names == sorted(f"{m} trial {n}" for m in METHODS for n in range(TRIALS_PER_METHOD))
    for run in runs:
        assert run.info.status == "FINISHED"
        folder = client.download_artifacts(run.info.run_id, "sparsity")  # served by the server
        png = Path(folder) / "update_histograms.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_runs_open_in_the_model_training_view(stack):
    outside = browse_runs_as_a_user("http://127.0.0.1:5000", "split-digits",
                                    "compose-test.sgd", "sgd trial 1", "compose")
    assert outside == []


def test_down_then_up_loses_nothing(stack):
    before = (_trials(stack), sorted(r.info.run_id for r in _trial_runs()[1]))
    stack.run(STOP, timeout=300)
    assert "worker" not in stack.services()  # `--profile worker down` removes them too
    stack.run(UP, timeout=600)
    after = (_trials(stack), sorted(r.info.run_id for r in _trial_runs()[1]))
    assert after == before


def test_secrets_and_history_stay_out_of_the_build_context(stack, tmp_path):
    """`.dockerignore` as Docker reads it: a context holding a `.env`, a `.git` and local
    state, sent to a throwaway build that lists what arrived."""
    context = tmp_path / "context"
    shutil.copytree(REPO / "platform", context / "platform", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / ".dockerignore", context)
    for path in (".env", ".git/config", ".classp/mlflow.db", "docker/wheels/README.md"):
        (context / path).parent.mkdir(parents=True, exist_ok=True)
        (context / path).write_text("x")
    (context / "Dockerfile").write_text(
        "FROM python:3.11-slim\nCOPY . /context\nCMD [\"find\", \"/context\", \"-maxdepth\", \"2\"]\n")
    tag = f"{PROJECT}-context-check"
    stack.run(f"docker build -q -t {tag} {context}", timeout=300)
    try:
        listing = stack.run(f"docker run --rm {tag}").stdout.split()
    finally:
        stack.run(f"docker rmi -f {tag}", check=False)
    assert "/context/platform/classp" in listing and "/context/docker/wheels" in listing
    for secret in ("/context/.env", "/context/.git", "/context/.classp"):
        assert secret not in listing, f"{secret} was sent to the build"
