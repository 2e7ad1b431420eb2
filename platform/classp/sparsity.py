"""Per-parameter update counts and their histograms.

"Update sparsity" is how rarely weights move. CLASSP counts its own updates on the device
(`track_updates=True`); for every other optimizer the counter compares each weight with
its value before the step, so that CLASSP and EWC can be drawn side by side.
"""

from __future__ import annotations

import torch
from torch import Tensor

from classp.colours import colour
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


def histogram_figure(histograms: list[dict], title: str, max_panels: int = 8):
    """One small matplotlib figure: a panel per parameter tensor (the first `max_panels`),
    a histogram outline per task. Logged per trial as a PNG of some tens of KB that the MLflow UI
    shows inline, offline (a Plotly page would carry 4.8 MB of plotly.js per trial).

    `histograms` is what the tracker logs: [{"task", "task_name", "steps", "params":
    {name: update_histogram(...)}}]. The x axis is the fraction of the task's steps in
    which a weight was updated, so tasks of different lengths share one axis.
    """
    import matplotlib

    matplotlib.use("Agg")  # no display: files only
    from matplotlib.figure import Figure

    names = list(histograms[0]["params"]) if histograms else []
    shown = names[:max_panels]
    cols = min(2, max(1, len(shown)))
    rows = max(1, -(-len(shown) // cols))
    height = 2.3 * rows + 0.9
    fig = Figure(figsize=(4.2 * cols, height), dpi=60)
    axes = fig.subplots(rows, cols, squeeze=False)
    # One outline per task (`stairs`: one artist, where bars were twenty), and fixed
    # margins instead of tight_layout: together the figure costs a tenth of the time, and
    # a trial's tracking is host time that a GPU study waits for.
    fig.subplots_adjust(left=0.1 if cols == 2 else 0.16, right=0.98, wspace=0.25,
                        hspace=0.55, top=1 - 0.55 / height, bottom=0.85 / height)
    for i, name in enumerate(shown):
        ax = axes[i // cols][i % cols]
        for t, task in enumerate(histograms):
            h = task["params"][name]
            steps = h["steps"]
            share = [c / h["numel"] for c in h["counts"]]
            ax.stairs(share, [e / steps for e in h["edges"]], color=colour(t), linewidth=1.4,
                      label=f"task {task['task']}: {task['task_name']}" if i == 0 else None)
        # A text, not set_title (which re-measures the axes at every draw), and few ticks:
        # text is most of what drawing this figure costs.
        ax.text(0.5, 1.03, name, transform=ax.transAxes, ha="center", fontsize=8)
        ax.set_xlim(-0.05, 1.05)
        ax.locator_params(nbins=4)
        ax.tick_params(labelsize=7)
        if i % cols == 0:
            ax.set_ylabel("share of weights", fontsize=7)
        if i // cols == rows - 1:
            ax.set_xlabel("share of the task's steps that moved it", fontsize=7)
    for j in range(len(shown), rows * cols):
        axes[j // cols][j % cols].set_visible(False)
    more = f" (first {len(shown)} of {len(names)} tensors; all in the JSON)" if len(names) > len(shown) else ""
    fig.suptitle(title + more, fontsize=9)
    if shown:
        fig.legend(loc="lower center", ncol=min(5, len(histograms)), fontsize=7, frameon=False)
    return fig
