"""The published CLASSP.py, restated from its behaviour, for comparison only.

This is not the platform's optimizer (`classp.CLASSP`, whose `rule="reference-code"`
computes the same thing on a flat buffer, fast). It is a per-tensor Python loop written the
way the published code is written, so that the tests have an oracle that shares no code
with ours and the benchmarks have the published loop's speed. Per parameter tensor:

    if (grad ** 2).any() > threshold:     # a boolean (0 or 1) against the threshold
        s += |grad|                       # the `** power` is taken of a temporary and lost
        w -= lr * grad / (s + eps) ** (1 / power)   if decay
        w -= lr * grad                              otherwise

so a threshold below 1 never masks a tensor with any non-zero gradient, and from 1 up
everything is masked. Across parameter groups the published loop keeps the first group's
settings for every group (a bug that matters only with several groups); this class
reproduces that. The test `(grad**2).any() > threshold` reads the tensor on the host, one
synchronisation per tensor per step, as the original does.
"""

from __future__ import annotations

import torch


class PublishedCLASSP(torch.optim.Optimizer):
    def __init__(self, params, lr=1e-2, threshold=0.0, power=1.0, eps=1e-5, decay=True):
        super().__init__(params, dict(lr=lr, threshold=threshold, power=power, eps=eps, decay=decay))

    @torch.no_grad()
    def step(self, closure=None):
        first = self.param_groups[0]  # the published loop's settings for every group
        lr, threshold, power, eps, decay = (first[k] for k in ("lr", "threshold", "power", "eps", "decay"))
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                state = self.state[p]
                if "sum" not in state:
                    state["sum"] = torch.zeros_like(p)
                if bool((grad ** 2).any()) > threshold:
                    state["sum"].add_(grad.abs())
                    if decay:
                        p.sub_(lr * grad / (state["sum"] + eps) ** (1 / power))
                    else:
                        p.sub_(lr * grad)
        return None
