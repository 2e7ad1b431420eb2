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
