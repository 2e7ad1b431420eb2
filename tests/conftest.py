"""Shared fixtures: small data written in the real on-disk formats."""

from __future__ import annotations

from pathlib import Path

import pytest

from support import make_mnist_like


@pytest.fixture(scope="session")
def vision_data_dir(tmp_path_factory) -> Path:
    """A data folder in torchvision's layout: MNIST uncompressed, Fashion-MNIST gzipped."""
    root = tmp_path_factory.mktemp("vision")
    make_mnist_like(root / "MNIST" / "raw", seed=1)
    make_mnist_like(root / "FashionMNIST" / "raw", seed=2, compress=True)
    return root


def pytest_collection_modifyitems(session, config, items):
    """The compose stack's tests last: CI starts the Docker daemon and builds the images in
    the background while the rest of the suite runs (.ci/run)."""
    items.sort(key=lambda item: item.get_closest_marker("compose") is not None)


# ----------------------------------------------------------------------------------------
# A real MLflow tracking server on loopback, started once per test session.
# ----------------------------------------------------------------------------------------

from support import start_mlflow_server, stop_process  # noqa: E402


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mlflow-server")
    process, url = start_mlflow_server(folder)
    yield url
    stop_process(process)


@pytest.fixture
def classp_home(tmp_path, monkeypatch) -> Path:
    """A fresh project data directory (Optuna journal, MLflow SQLite store) per test."""
    home = tmp_path / "home"
    monkeypatch.setenv("CLASSP_HOME", str(home))
    return home


# ----------------------------------------------------------------------------------------
# No process outlives the suite: every child inherits a marker in its environment, and at
# the end of the run any process still carrying it (an orphaned server, a stuck worker)
# fails the run, named, and is killed.
# ----------------------------------------------------------------------------------------

import os  # noqa: E402
import signal  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402

_MARKER = f"CLASSP_TEST_SESSION={uuid.uuid4().hex}"
os.environ["CLASSP_TEST_SESSION"] = _MARKER.split("=", 1)[1]


def processes_started_by_the_suite() -> list[tuple[int, str]]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
            if _MARKER.encode() in environ:
                command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                found.append((int(entry.name), command.strip()[:120]))
        except OSError:
            continue
    return found


def pytest_sessionfinish(session, exitstatus):
    deadline = time.monotonic() + 15  # servers being stopped get a moment to exit
    left = processes_started_by_the_suite()
    while left and time.monotonic() < deadline:
        time.sleep(0.5)
        left = processes_started_by_the_suite()
    if left:
        for pid, _ in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        listing = "; ".join(f"{pid}: {command}" for pid, command in left)
        print(f"\nprocesses started by the tests were still running at the end (killed now): {listing}")
        session.exitstatus = 1
