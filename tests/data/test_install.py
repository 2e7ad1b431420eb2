"""`classp data`: idx files checked (header, size, md5) and copied, or nothing written."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import pytest

from classp.data.idx import check_idx
from classp.data.install import KNOWN_MD5, install
from classp.errors import UserError
from support import make_mnist_like, run_classp, write_idx

DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")


def test_debian_fashion_mnist_is_checked_and_copied(tmp_path):
    # The real Fashion-MNIST of Debian's dataset-fashion-mnist package (.ci/run installs it).
    if not DEBIAN_FASHION.is_dir() and not os.environ.get("CI"):
        pytest.skip("Debian's dataset-fashion-mnist is not installed (CI installs it)")
    out = run_classp("data", "fashion-mnist", DEBIAN_FASHION, "--data-dir", tmp_path)
    assert out.returncode == 0, out.stderr
    raw = tmp_path / "FashionMNIST" / "raw"
    assert sorted(p.name for p in raw.iterdir()) == sorted(KNOWN_MD5["FashionMNIST"])
    from torchvision.datasets import FashionMNIST

    assert len(FashionMNIST(str(tmp_path), train=True)) == 60_000
    assert "4 files checked" in out.stdout


def test_files_that_are_not_the_originals_write_nothing(tmp_path):
    make_mnist_like(tmp_path / "src", compress=True)
    out = run_classp("data", "mnist", tmp_path / "src", "--data-dir", tmp_path / "data")
    assert out.returncode == 2
    line, = out.stderr.strip().splitlines()
    assert line.startswith(f"classp: error: {tmp_path / 'src'}/train-images-idx3-ubyte.gz: md5 of its contents is")
    assert line.endswith("it is not the original MNIST file, and nothing was written")
    assert not (tmp_path / "data").exists()


def test_a_missing_file_or_folder_is_named(tmp_path):
    (tmp_path / "src").mkdir()
    with pytest.raises(UserError, match="no train-images-idx3-ubyte or train-images-idx3-ubyte.gz there"):
        install("mnist", tmp_path / "src", tmp_path / "data")
    with pytest.raises(UserError, match="is not a folder"):
        install("mnist", tmp_path / "nowhere", tmp_path / "data")


def test_corrupt_idx_files_are_called_corrupt(tmp_path):
    images = np.zeros((3, 4, 4), dtype=np.uint8)
    write_idx(tmp_path / "ok", images)
    data = (tmp_path / "ok").read_bytes()
    assert check_idx(data, "ok") == (3, 4, 4)
    with pytest.raises(UserError, match="x is not an idx file of unsigned bytes"):
        check_idx(b"garbage header and more", "x")
    with pytest.raises(UserError, match="the file is truncated or corrupt"):
        check_idx(data[:-5], "y")
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(data)[:-10])
    with pytest.raises(UserError, match="cannot be unpacked"):
        install("mnist", tmp_path / "src", tmp_path / "data")


def test_a_corrupt_file_in_the_data_folder_is_named_when_loading(tmp_path):
    from classp.data import DataOptions, load_sequence

    raw = tmp_path / "MNIST" / "raw"
    make_mnist_like(raw)
    images = raw / "train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:-100])  # truncated
    with pytest.raises(UserError, match=f"{images} holds .* the file is truncated or corrupt"):
        load_sequence("split-mnist", DataOptions(data_dir=tmp_path))
    images.write_bytes(b"\x12\x34" + images.read_bytes()[2:])  # a garbage header
    with pytest.raises(UserError, match=f"{images} is not an idx file"):
        load_sequence("split-mnist", DataOptions(data_dir=tmp_path))
