"""`classp data`: copy MNIST or Fashion-MNIST idx files into the data directory, checked.

The source is a folder holding the four idx files, gzipped (`.gz`) or not. Each is read,
its idx header checked, and the md5 of its uncompressed bytes compared with the known sum;
only when all four pass are they written, uncompressed, to `<data-dir>/<Name>/raw/`, where
torchvision reads them. A bad source writes nothing.

MNIST's sums are those of the original files (LeCun, Cortes and Burges). Fashion-MNIST's
are those of the uncompressed files of Debian's `dataset-fashion-mnist` package (Debian
recompressed the originals, so the `.gz` sums differ from the upstream ones; the contents
are what this platform was measured with).
"""

from __future__ import annotations

import gzip
import hashlib
import os
from pathlib import Path

from classp.data.idx import RAW_FILES, check_idx, check_labels, check_pairs
from classp.errors import UserError

KNOWN_MD5 = {
    "MNIST": {
        "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
        "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
        "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
        "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
    },
    "FashionMNIST": {
        "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
        "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
        "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
        "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
    },
}
DATASETS = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}


def read_raw(folder: Path, filename: str) -> tuple[bytes, Path]:
    """The uncompressed bytes of `filename` from `folder` (gzipped or not)."""
    for path in (folder / f"{filename}.gz", folder / filename):
        if path.is_file():
            try:
                return (gzip.decompress(path.read_bytes()) if path.suffix == ".gz"
                        else path.read_bytes()), path
            except (OSError, EOFError) as exc:
                raise UserError(f"{path} cannot be unpacked ({exc}); the file is corrupt: "
                                f"replace it with the original") from None
    raise UserError(f"{folder}: no {filename} or {filename}.gz there; give the folder that "
                    f"holds the four idx files")


def install(dataset: str, source: Path, root: Path, echo=print) -> Path:
    """Check and copy the four files; returns the folder written."""
    if dataset not in DATASETS:
        raise UserError(f"unknown data set {dataset!r}; choose one of: {', '.join(DATASETS)}")
    name = DATASETS[dataset]
    if not source.is_dir():
        raise UserError(f"{source} is not a folder; give the folder that holds the idx files")
    # What is wrong with a file first (its header, its size, its labels, its partner), then
    # whether it is the original: a lie named is more use than "md5 differs".
    read, shapes = {}, {}
    for filename in RAW_FILES:
        data, path = read_raw(source, filename)
        shapes[filename] = check_idx(data, str(path))
        if "labels" in filename:
            check_labels(data[8:], str(path))
        read[filename] = data, path
    check_pairs(shapes, source)
    checked = {}
    for filename, (data, path) in read.items():
        digest = hashlib.md5(data).hexdigest()
        if digest != KNOWN_MD5[name][filename]:
            raise UserError(f"{path}: md5 of its contents is {digest}, expected "
                            f"{KNOWN_MD5[name][filename]}; it is not the original {name} file, "
                            f"and nothing was written")
        checked[filename] = data
    raw = root / name / "raw"
    try:
        raw.mkdir(parents=True, exist_ok=True)
        for filename, data in checked.items():
            tmp = raw / f".{filename}.{os.getpid()}.part"  # unique per process: no race
            tmp.write_bytes(data)
            tmp.replace(raw / filename)
            echo(f"{name}/raw/{filename}: md5 {KNOWN_MD5[name][filename]} ok")
    except OSError as exc:
        raise UserError(f"cannot write to {raw}: {exc.strerror}; choose another --data-dir") from None
    return raw
