"""The sparsity figure every trial logs: a panel per parameter tensor, a histogram outline
per task, drawn with Pillow as a small PNG that the MLflow UI shows inline, offline.

Drawn directly, not through matplotlib: a study logs one per trial, and matplotlib's
figure (axes, ticks and text objects built and laid out for every trial) cost more host
time than a small model's whole training (benchmarks/population.py measures both). The
figure is drawn at twice its size and shrunk, which smooths its lines.
"""

from __future__ import annotations

import io
from functools import lru_cache

from classp.colours import colour

SCALE = 2  # drawn at twice the size, then shrunk (anti-aliasing)
PANEL_W, PANEL_H = 300, 150  # one panel's plot area, in pixels of the final image
LEFT, RIGHT, GAP_X = 46, 12, 40
TITLE_H, PANEL_TITLE_H, AXIS_H, LEGEND_ROW_H = 40, 18, 22, 16
GREY, BLACK, WHITE = (120, 120, 120), (30, 30, 30), (255, 255, 255)


@lru_cache(maxsize=4)
def _font(size: int):
    from PIL import ImageFont

    return ImageFont.load_default(size=size * SCALE)


def histogram_png(histograms: list[dict], title: str, max_panels: int = 8) -> bytes:
    """The PNG of `histograms` (what the tracker logs: [{"task", "task_name", "steps",
    "params": {name: update_histogram(...)}}]). The x axis is the share of the task's
    steps in which a weight moved, so tasks of different lengths share one axis; the y
    axis the share of the tensor's weights."""
    from PIL import Image, ImageDraw

    names = list(histograms[0]["params"]) if histograms else []
    shown = names[:max_panels]
    cols = min(2, max(1, len(shown)))
    rows = max(1, -(-len(shown) // cols))
    legend_rows = -(-len(histograms) // 3) if histograms else 0
    cell_w, cell_h = LEFT + PANEL_W + RIGHT, PANEL_TITLE_H + PANEL_H + AXIS_H
    width = cols * cell_w + (cols - 1) * GAP_X
    height = TITLE_H + rows * cell_h + legend_rows * LEGEND_ROW_H + 8
    image = Image.new("RGB", (width * SCALE, height * SCALE), WHITE)
    draw = ImageDraw.Draw(image)
    more = f" (first {len(shown)} of {len(names)} tensors; all in the JSON)" if len(names) > len(shown) else ""
    _text(draw, (width / 2, 4), title + more, 12, anchor="ma")
    _text(draw, (width / 2, 21), "x: share of the task's steps that moved a weight;  "
                                 "y: share of the tensor's weights", 10, anchor="ma", fill=GREY)
    for i, name in enumerate(shown):
        x0 = (i % cols) * (cell_w + GAP_X) + LEFT
        y0 = TITLE_H + (i // cols) * cell_h + PANEL_TITLE_H
        _panel(draw, x0, y0, name, [task["params"][name] for task in histograms])
    for t, task in enumerate(histograms):  # the legend: three tasks per row
        x = 10 + (t % 3) * (width - 20) / 3
        y = TITLE_H + rows * cell_h + (t // 3) * LEGEND_ROW_H
        _line(draw, [(x, y + 7), (x + 18, y + 7)], colour(t), 2)
        _text(draw, (x + 24, y), f"task {task['task']}: {task['task_name']}", 10)
    out = io.BytesIO()
    small = image.resize((width, height), Image.BOX).quantize(64, method=Image.Quantize.FASTOCTREE)
    small.save(out, format="PNG")
    return out.getvalue()


def _panel(draw, x0: float, y0: float, name: str, histograms: list[dict]) -> None:
    """One tensor: every task's histogram as a step outline, with its axes and ticks."""
    shares = [[c / h["numel"] for c in h["counts"]] for h in histograms]
    top = max((max(s) for s in shares if s), default=1.0) or 1.0
    top *= 1.05

    def at(x: float, y: float) -> tuple[float, float]:  # data -> pixels
        return x0 + (x + 0.05) / 1.1 * PANEL_W, y0 + PANEL_H - y / top * PANEL_H

    _text(draw, (x0 + PANEL_W / 2, y0 - PANEL_TITLE_H + 2), name, 10, anchor="ma")
    draw.rectangle([v * SCALE for v in (x0, y0, x0 + PANEL_W, y0 + PANEL_H)], outline=GREY,
                   width=SCALE)
    for x in (0.0, 0.5, 1.0):
        px, py = at(x, 0)
        _line(draw, [(px, py), (px, py + 4)], GREY, 1)
        _text(draw, (px, py + 5), f"{x:g}", 9, anchor="ma", fill=GREY)
    for y in (0.0, top / 2.1, top / 1.05):
        px, py = at(-0.05, y)
        _line(draw, [(px - 4, py), (px, py)], GREY, 1)
        _text(draw, (px - 6, py), f"{y:.2g}", 9, anchor="rm", fill=GREY)
    for t, (h, share) in enumerate(zip(histograms, shares)):
        edges = [e / h["steps"] for e in h["edges"]]
        points = [at(edges[0], 0)]
        for left, right, value in zip(edges, edges[1:], share):
            points += [at(left, value), at(right, value)]
        points.append(at(edges[-1], 0))
        _line(draw, points, colour(t), 1.5)


def _line(draw, points, fill, width: float) -> None:
    if isinstance(fill, str):
        fill = _rgb(fill)
    draw.line([(x * SCALE, y * SCALE) for x, y in points], fill=fill, width=round(width * SCALE),
              joint="curve")


def _text(draw, xy, text: str, size: int, anchor: str = "la", fill=BLACK) -> None:
    draw.text((xy[0] * SCALE, xy[1] * SCALE), text, font=_font(size), fill=fill, anchor=anchor)


def _rgb(hex_colour: str) -> tuple[int, int, int]:
    value = hex_colour.lstrip("#")
    return tuple(int(value[i:i + 2], 16) for i in (0, 2, 4))
