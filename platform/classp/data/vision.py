"""MNIST and Fashion-MNIST through torchvision, preloaded as normalised tensors.

torchvision's datasets look for the uncompressed files `<root>/<Name>/raw/<file>`; gzipped
copies there or in a known system folder (Debian's `dataset-fashion-mnist` package puts
the real Fashion-MNIST in /usr/share/datasets/fashion-mnist) are unpacked into place
first, so no download is needed when the data is on the machine.
"""

from __future__ import annotations

import gzip
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from torch import Tensor
from torch.nn import functional as F

from classp.data.idx import RAW_FILES, check_idx_file, check_labels, check_pairs
from classp.errors import UserError, first_line

# The paper normalises both MNIST and Fashion-MNIST with MNIST's statistics.
MEAN, STD = 0.1307, 0.3081


@dataclass(frozen=True)
class Pixels:
    """How stored images become model inputs: `pad` zero pixels on every side (as
    torchvision's Pad does before ToTensor), then (x / 255 - mean) / std."""

    pad: int = 0
    mean: float = MEAN
    std: float = STD


PAPER_PIXELS = Pixels()  # the paper's scripts (and the study protocol)
# Hsu et al. 2018: padded to 32x32, standardised with the padded images' statistics.
HSU2018_PIXELS = Pixels(pad=2, mean=0.1000, std=0.2752)
UNIT_PIXELS = Pixels(mean=0.0, std=1.0)  # van de Ven et al.: ToTensor's [0, 1], no standardising
UNIT_PIXELS_32 = Pixels(pad=2, mean=0.0, std=1.0)  # ... padded to 32x32 (their permuted MNIST)

SYSTEM_DIRS = {
    "MNIST": [Path("/usr/share/datasets/mnist")],
    "FashionMNIST": [Path("/usr/share/datasets/fashion-mnist")],
}


def _stage_raw_files(name: str, raw: Path) -> None:
    """Unpack `<file>.gz` into `raw/<file>` wherever the uncompressed file is missing."""
    for filename in RAW_FILES:
        target = raw / filename
        if target.exists():
            continue
        for folder in [raw, *SYSTEM_DIRS.get(name, [])]:
            packed = folder / f"{filename}.gz"
            if packed.exists():
                raw.mkdir(parents=True, exist_ok=True)
                # A name unique to this process: workers staging the same folder at once
                # must not write into each other's temporary file.
                tmp = raw / f".{filename}.{os.getpid()}.part"
                try:
                    with gzip.open(packed, "rb") as src, open(tmp, "wb") as dst:
                        shutil.copyfileobj(src, dst)
                except (OSError, EOFError) as exc:  # garbage (BadGzipFile) or truncated
                    tmp.unlink(missing_ok=True)
                    raise UserError(f"{packed} cannot be unpacked ({exc}); the file is corrupt: "
                                    f"replace it with the original") from None
                tmp.replace(target)  # never leave a half-written file under the real name
                break


def missing_files_message(name: str, root: Path) -> str:
    raw = root / name / "raw"
    where = ", ".join(str(d) for d in SYSTEM_DIRS.get(name, []))
    return (
        f"{name} not found: expected {', '.join(RAW_FILES)} (or the same names with .gz) in "
        f"{raw}/" + (f" or in {where}" if where else "")
        + "; put the files there, pass --data-dir, or add --download on a machine with internet"
    )


def normalise(images: Tensor, pixels: Pixels = PAPER_PIXELS) -> Tensor:
    """uint8 (N, H, W) -> float32 (N, 1, H + 2 pad, W + 2 pad), padded with zeros, then
    standardised."""
    x = images.float() / 255.0
    if pixels.pad:
        x = F.pad(x, (pixels.pad,) * 4)
    return ((x - pixels.mean) / pixels.std).unsqueeze(1)


def load_torchvision(name: str, root: Path, download: bool,
                     pixels: Pixels = PAPER_PIXELS) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Return (train_x, train_y, test_x, test_y) of MNIST or FashionMNIST."""
    from torchvision import datasets

    cls = {"MNIST": datasets.MNIST, "FashionMNIST": datasets.FashionMNIST}[name]
    raw = root / name / "raw"
    _stage_raw_files(name, raw)
    shapes = {filename: check_idx_file(raw / filename)  # a corrupt file named as such
              for filename in RAW_FILES if (raw / filename).is_file()}
    if len(shapes) == len(RAW_FILES):
        check_pairs(shapes, raw)
    try:
        train = cls(str(root), train=True, download=download)
        test = cls(str(root), train=False, download=download)
    except RuntimeError as exc:  # without --download: not found; with it: the download failed
        detail = f" (download failed: {first_line(exc)})" if download else ""
        raise UserError(missing_files_message(name, root) + detail) from None
    check_labels(train.targets.unique(), str(raw / "train-labels-idx1-ubyte"))
    check_labels(test.targets.unique(), str(raw / "t10k-labels-idx1-ubyte"))
    return (normalise(train.data, pixels), train.targets.long(), normalise(test.data, pixels),
            test.targets.long())
