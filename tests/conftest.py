"""Shared fixtures: small data written in the real on-disk formats."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest


def write_idx(path: Path, array: np.ndarray, compress: bool = False) -> None:
    """Write an IDX file (the MNIST format): magic, dimensions, then uint8 data."""
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + b"".join(
        struct.pack(">I", d) for d in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    if compress:
        with gzip.open(str(path) + ".gz", "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)


def make_mnist_like(folder: Path, n_train: int = 200, n_test: int = 100, seed: int = 0,
                    compress: bool = False) -> None:
    """Images whose brightness encodes the label, so that a model can learn them."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = np.arange(n) % 10
        rng.shuffle(labels)
        images = rng.integers(0, 40, size=(n, 28, 28))
        for i, label in enumerate(labels):
            images[i, 4 + 2 * label: 6 + 2 * label, 4:24] = 250  # a bar at a label-given row
        write_idx(folder / f"{prefix}-images-idx3-ubyte", images, compress)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte", labels, compress)


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
