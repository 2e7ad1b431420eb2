"""`docker-compose.yml` checked as a file, in seconds: real commands with real flags,
loopback-only ports, no secrets, health checks, a pinned database image. The stack itself
runs in tests/test_compose_up.py."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
ONE_SHOT = [name for name, s in SERVICES.items() if s.get("restart") == "no"]
LONG_LIVED = [name for name, s in SERVICES.items() if "profiles" not in s and name not in ONE_SHOT]
INTERPOLATION = re.compile(r"\$\{[^}]*\}")

# The program each command starts, and how to ask it for help here.
HELP = {
    "mlflow": lambda argv: [sys.executable, "-m", "mlflow", *argv[1:2], "--help"],
    "classp": lambda argv: [sys.executable, "-m", "classp.cli", *argv[1:3], "--help"],
    "optuna-dashboard": lambda argv: [shutil.which("optuna-dashboard") or "optuna-dashboard", "--help"],
}


def _commands():
    return [(name, s["command"]) for name, s in SERVICES.items() if "command" in s]


@pytest.mark.parametrize("name, command", _commands(), ids=[n for n, _ in _commands()])
def test_every_command_is_a_real_command_with_real_flags(name, command):
    assert isinstance(command, list), f"{name}: give the command as a list (no shell parsing)"
    program = command[0]
    if program == "python":  # a one-shot snippet: it must at least be Python
        assert command[1] == "-c", name
        compile(command[2], name, "exec")
        return
    assert program in HELP, f"{name}: {program} is not mlflow, optuna-dashboard or classp"
    out = subprocess.run(HELP[program](command), capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    for flag in (arg for arg in command if arg.startswith("--")):
        assert flag in out.stdout, f"{name}: {program} has no flag {flag}"


def test_published_ports_are_on_loopback_only():
    for name, service in SERVICES.items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"
    assert "ports" not in SERVICES["postgres"]
    assert {p for s in SERVICES.values() for p in s.get("ports", [])} == {
        "127.0.0.1:5000:5000", "127.0.0.1:8080:8080"}


def test_no_secret_is_written_in_the_file():
    text = (REPO / "docker-compose.yml").read_text()
    without = INTERPOLATION.sub("", text)
    assert "POSTGRES_PASSWORD" not in without.replace("POSTGRES_PASSWORD:", "")
    # With every ${...} replaced by a marker, a database URL's credentials are markers only.
    urls = re.findall(r"postgresql://[^\s\"']+", INTERPOLATION.sub("<var>", text))
    assert urls
    for url in urls:
        credentials = url.split("://", 1)[1].split("@", 1)[0]
        assert credentials == "<var>:<var>", f"literal credentials in {url}"
    assert SERVICES["postgres"]["environment"]["POSTGRES_PASSWORD"].startswith("${POSTGRES_PASSWORD:?")
    gitignore = (REPO / ".gitignore").read_text().splitlines()
    assert ".env" in gitignore and (REPO / ".env.example").exists()


def test_each_long_lived_service_has_a_health_check():
    assert set(LONG_LIVED) == {"postgres", "mlflow", "optuna-dashboard"}
    for name in LONG_LIVED:
        assert SERVICES[name]["healthcheck"]["test"], name
    assert "pg_isready" in " ".join(SERVICES["postgres"]["healthcheck"]["test"])
    assert "/health" in " ".join(SERVICES["mlflow"]["healthcheck"]["test"])


def test_the_stack_is_wired_as_documented():
    image = SERVICES["postgres"]["image"]
    assert re.fullmatch(r"postgres:\d+\.\d+[\w.-]*", image), f"pin the postgres image: {image}"
    mlflow = SERVICES["mlflow"]["command"]
    assert "--serve-artifacts" in mlflow and mlflow[mlflow.index("--artifacts-destination") + 1] == "/mlartifacts"
    hosts = mlflow[mlflow.index("--allowed-hosts") + 1].split(",")
    assert "mlflow:5000" in hosts and "localhost:5000" in hosts
    assert SERVICES["worker"]["profiles"] == ["worker"]  # plain `up` starts only the stack
    # Workers track through the compose file's environment: nobody types a password.
    worker = SERVICES["worker"]["environment"]
    assert worker["CLASSP_TRACKING_URI"] == "http://mlflow:5000"
    assert worker["CLASSP_STORAGE"].endswith("@postgres:5432/optuna")
    assert "--storage" not in SERVICES["worker"]["command"]
    # A fresh database gets Optuna's tables before the dashboard opens it.
    assert ONE_SHOT == ["optuna-schema"]
    for name in ("optuna-dashboard", "worker"):
        assert SERVICES[name]["depends_on"]["optuna-schema"] == {
            "condition": "service_completed_successfully"}
    init = (REPO / "docker" / "postgres-init" / "01-databases.sql").read_text()
    assert "CREATE DATABASE mlflow" in init and "CREATE DATABASE optuna" in init


def test_the_image_runs_as_a_non_root_user_with_cpu_torch_by_default():
    dockerfile = (REPO / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.\d+-slim", dockerfile, re.M)
    assert re.search(r"^ARG TORCH_VARIANT=cpu$", dockerfile, re.M)
    users = re.findall(r"^USER (\S+)", dockerfile, re.M)
    assert users and users[-1] not in ("root", "0")
    assert "pip install" in dockerfile and "ENTRYPOINT" not in dockerfile
