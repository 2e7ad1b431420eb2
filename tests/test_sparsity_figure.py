"""The sparsity figure a trial logs (classp.sparsity_figure): a small PNG, a panel per
tensor (the first eight), each task's outline in its colour."""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image

from classp.colours import colour
from classp.sparsity import update_histogram
from classp.sparsity_figure import histogram_png


def _histograms(tasks: int, tensors: int) -> list[dict]:
    counts = torch.tensor([0.0, 1.0, 1.0, 3.0, 4.0, 4.0])
    return [{"task": t + 1, "task_name": f"t{t}", "steps": 4,
             "params": {f"p{i}": update_histogram(counts, 4) for i in range(tensors)}}
            for t in range(tasks)]


def _size(png: bytes) -> tuple[int, int]:
    return Image.open(io.BytesIO(png)).size


def test_the_figure_is_a_small_png_with_an_outline_per_task_in_its_colour():
    png = histogram_png(_histograms(tasks=3, tensors=3), "sgd: per-weight update counts per task")
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) < 100_000
    rgb_image = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    pixels = {tuple(int(v) for v in p) for p in rgb_image.reshape(-1, 3)}
    for t in range(3):
        rgb = tuple(int(colour(t)[i:i + 2], 16) for i in (1, 3, 5))
        assert any(sum(abs(a - b) for a, b in zip(p, rgb)) < 40 for p in pixels), colour(t)
    unused = tuple(int(colour(5)[i:i + 2], 16) for i in (1, 3, 5))
    assert not any(sum(abs(a - b) for a, b in zip(p, unused)) < 20 for p in pixels)


def test_panels_come_two_by_row_and_at_most_eight():
    two_rows = _size(histogram_png(_histograms(3, 3), "x"))
    assert _size(histogram_png(_histograms(3, 4), "x")) == two_rows
    one_row = _size(histogram_png(_histograms(3, 2), "x"))
    assert one_row[0] == two_rows[0] and one_row[1] < two_rows[1]
    four_rows = _size(histogram_png(_histograms(3, 8), "x"))
    assert _size(histogram_png(_histograms(3, 9), "x")) == four_rows  # the ninth is in the JSON
