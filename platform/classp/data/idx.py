"""MNIST's idx files: the header, the size it declares, the labels and the pairs of files.

Shared by `classp data` (install.py), which checks a source folder before copying, and by
the loader (vision.py), which checks what torchvision is about to read: a corrupt file is
named as such instead of failing inside torchvision.
"""

from __future__ import annotations

from pathlib import Path

from classp.errors import UserError

RAW_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


def idx_shape(head: bytes, where: str) -> tuple[int, ...]:
    """The shape an idx header declares (`head`: at least the header's bytes)."""
    if len(head) < 4 or head[0] != 0 or head[1] != 0 or head[2] != 0x08 or not 1 <= head[3] <= 4:
        raise UserError(f"{where} is not an idx file of unsigned bytes (bad header); the file "
                        f"is corrupt: replace it with the original")
    dims = head[3]
    if len(head) < 4 + 4 * dims:
        raise UserError(f"{where} is truncated inside its header; replace it with the original")
    return tuple(int.from_bytes(head[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims))


def _check_size(shape: tuple[int, ...], total_bytes: int, where: str) -> None:
    header = 4 + 4 * len(shape)
    count = 1
    for d in shape:
        count *= d
    if total_bytes != header + count:
        raise UserError(f"{where} holds {total_bytes - header:,} data bytes but its header declares "
                        f"{count:,} (shape {shape}): the file is truncated or corrupt; replace it "
                        f"with the original")


def check_idx(data: bytes, where: str) -> tuple[int, ...]:
    """The shape an idx file declares, after checking that its bytes match it."""
    shape = idx_shape(data, where)
    _check_size(shape, len(data), where)
    return shape


def check_idx_file(path: Path) -> tuple[int, ...]:
    """`check_idx` of a file on disk, reading its header only."""
    with open(path, "rb") as f:
        head = f.read(4 + 4 * 4)
    shape = idx_shape(head, str(path))
    _check_size(shape, path.stat().st_size, str(path))
    return shape


NUM_CLASSES = 10  # MNIST's digits and Fashion-MNIST's garments


def check_pairs(shapes: dict[str, tuple[int, ...]], where: Path) -> None:
    """Each images file holds as many images as its labels file holds labels, and the
    shapes are those of 28x28 images and a list of labels."""
    for split in ("train", "t10k"):
        images, labels = shapes[f"{split}-images-idx3-ubyte"], shapes[f"{split}-labels-idx1-ubyte"]
        if len(images) != 3 or len(labels) != 1:
            raise UserError(f"{where}: {split}-images must hold images (3 dimensions) and "
                            f"{split}-labels labels (1), got shapes {images} and {labels}; "
                            f"replace the files with the originals")
        if images[0] != labels[0]:
            raise UserError(f"{where}: {split}-images-idx3-ubyte holds {images[0]:,} images but "
                            f"{split}-labels-idx1-ubyte {labels[0]:,} labels; the files do not "
                            f"belong together: replace them with the originals")


def check_labels(labels, where: str) -> None:
    """Every label is a class, 0 to 9 (a flipped byte would index past the model's outputs)."""
    bad = [int(v) for v in labels if not 0 <= int(v) < NUM_CLASSES]
    if bad:
        raise UserError(f"{where} holds {len(bad):,} label(s) outside 0-{NUM_CLASSES - 1} (the "
                        f"first: {bad[0]}); the file is corrupt: replace it with the original")
