"""Per-parameter update counts and their histograms.

"Update sparsity" is how rarely weights move. CLASSP counts its own updates on the device
(`track_updates=True`); for every other optimizer the counter compares each weight with
its value before the step, so that CLASSP and EWC can be drawn side by side.
"""

from __future__ import annotations

import torch
from torch import Tensor

from classp.optim import CLASSP


class UpdateCounter:
    """Per weight: in how many steps did it change? Counts stay on the device."""

    def __init__(self, named_params, optimizer):
        named = [(n, p) for n, p in named_params if p.requires_grad]
        self.names = [n for n, _ in named]
        self.params = [p for _, p in named]
        self.optimizer = optimizer
        self.native = isinstance(optimizer, CLASSP) and optimizer.track_updates
        if not self.native:
            self._counts = [torch.zeros_like(p, dtype=torch.float32) for p in self.params]
            self._previous = [p.detach().clone() for p in self.params]

    @torch.no_grad()
    def after_step(self) -> None:
        if self.native:
            return
        current = [p.detach() for p in self.params]
        changed = torch._foreach_sub(current, self._previous)
        torch._foreach_abs_(changed)
        torch._foreach_sign_(changed)  # 1 where the weight moved, 0 where it did not
        torch._foreach_add_(self._counts, changed)
        torch._foreach_copy_(self._previous, current)

    def counts(self) -> dict[str, Tensor]:
        """Cumulative per-weight counts by parameter name (live tensors: copy to keep)."""
        if not self.native:
            return dict(zip(self.names, self._counts))
        out = {}
        for name, p in zip(self.names, self.params):
            state = self.optimizer.state.get(p, {})
            out[name] = state["update_count"] if "update_count" in state else torch.zeros_like(
                p, dtype=torch.float32)
        return out

    def totals(self) -> Tensor:
        """Sum of each parameter's counts, stacked: one host read gives them all."""
        return torch.stack([c.sum() for c in self.counts().values()])

    def sizes(self) -> list[int]:
        return [p.numel() for p in self.params]


def update_histogram(counts: Tensor, steps: int, bins: int = 20) -> dict:
    """Histogram of per-weight update counts within a task of `steps` steps.

    The counts are integers in [0, steps]; with at most `bins` possible values each gets a
    bin of its own. Returns bin edges and counts; the counts add up to the tensor's size.
    """
    steps = max(int(steps), 1)
    n_bins = min(bins, steps + 1)
    # Edges at half-integers when every value has its own bin; otherwise even widths.
    if n_bins == steps + 1:
        edges = torch.arange(n_bins + 1, dtype=torch.float64) - 0.5
    else:
        edges = torch.linspace(0.0, float(steps), n_bins + 1, dtype=torch.float64)
    values = counts.detach().flatten().double().cpu()
    index = torch.bucketize(values, edges[1:-1], right=True)
    hist = torch.bincount(index, minlength=n_bins)[:n_bins]
    return {"edges": edges.tolist(), "counts": hist.tolist(), "numel": int(values.numel()),
            "steps": steps}


class SparsityReadings:
    """What a run's update counts say, window by window and task by task: the arithmetic
    behind the `sparsity/...` metrics (tracking only logs what this returns)."""

    def __init__(self) -> None:
        self._previous_totals: list[float] | None = None
        self._task_start: dict[str, Tensor] | None = None

    def window(self, updates: UpdateCounter, steps_in_window: int) -> float:
        """The share of all weights that a step of the window left unchanged (one host read
        for every tensor)."""
        totals = updates.totals().tolist()
        previous = self._previous_totals or [0.0] * len(totals)
        moved = (sum(totals) - sum(previous)) / (sum(updates.sizes()) * steps_in_window)
        self._previous_totals = totals
        return 1.0 - moved

    def task_end(self, updates: UpdateCounter, steps_in_task: int) -> tuple[dict, dict[str, float]]:
        """Per parameter, the histogram of how many of the task's steps moved each weight,
        and the share of weights a step of the task left unchanged."""
        counts = updates.counts()
        start = self._task_start or {}
        histograms, unchanged = {}, {}
        for name, c in counts.items():
            delta = c - start[name] if name in start else c
            histograms[name] = update_histogram(delta, steps_in_task)
            unchanged[name] = 1.0 - float(delta.sum()) / (delta.numel() * max(steps_in_task, 1))
        self._task_start = {n: c.clone() for n, c in counts.items()}
        return histograms, unchanged
