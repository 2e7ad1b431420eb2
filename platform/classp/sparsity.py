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


def histogram_figure(histograms: list[dict], title: str):
    """One Plotly figure: a panel per parameter tensor, a bar trace per task.

    `histograms` is what the tracker logs: [{"task", "task_name", "steps", "params":
    {name: update_histogram(...)}}]. The x axis is the fraction of the task's steps in
    which a weight was updated, so tasks of different lengths share one axis.
    """
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    names = list(histograms[0]["params"]) if histograms else []
    cols = min(2, max(1, len(names)))  # the MLflow UI shows it in a narrow frame
    rows = max(1, -(-len(names) // cols))
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=names)
    for t, task in enumerate(histograms):
        for i, name in enumerate(names):
            h = task["params"][name]
            edges, steps = h["edges"], h["steps"]
            centres = [(a + b) / 2 / steps for a, b in zip(edges[:-1], edges[1:])]
            share = [c / h["numel"] for c in h["counts"]]
            fig.add_trace(go.Bar(x=centres, y=share, name=f"task {task['task']}: {task['task_name']}",
                                 legendgroup=str(t), showlegend=i == 0,
                                 marker_color=_palette(t)), row=i // cols + 1, col=i % cols + 1)
    fig.update_layout(title=title, barmode="group", height=280 * rows + 80,
                      legend_title_text="task", margin=dict(l=60, r=20, t=90, b=50))
    fig.update_xaxes(range=[-0.05, 1.05])
    for i in range(len(names)):
        row, col = i // cols + 1, i % cols + 1
        if row == rows or i + cols >= len(names):
            fig.update_xaxes(title_text="share of the task's steps that moved it", row=row, col=col)
        if col == 1:
            fig.update_yaxes(title_text="share of weights", row=row, col=col)
    return fig


def _palette(i: int) -> str:
    colours = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
               "#7f7f7f", "#bcbd22", "#17becf"]
    return colours[i % len(colours)]
