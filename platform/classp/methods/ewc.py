"""Elastic Weight Consolidation (Kirkpatrick et al. 2017), the paper's baseline.

At the end of each task the diagonal empirical Fisher F and the weights w* are taken from
the same model (the published script anchored a fresh model to another's weights; we do
not). Later tasks add (lambda / 2) * sum_k sum_i F_k,i (w_i - w*_k,i)^2.

fisher "sample": the mean over samples of each sample's squared gradient (the empirical
Fisher); "batch": the mean over mini-batches of the squared batch-mean gradient (cheaper,
and smaller by about the batch size). mode "separate" keeps (F, w*) per task: two floats
per weight per task; "online" (Schwarz et al. 2018) keeps one running F = gamma F + F_new
and the latest w*: two floats per weight.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from classp.errors import UserError
from classp.methods.base import Method

FISHERS = ("sample", "batch")
MODES = ("separate", "online")


class EWC(Method):
    name = "ewc"
    defaults = {"lr": 0.01, "ewc_lambda": 100.0, "fisher": "sample", "mode": "separate",
                "gamma": 1.0, "fisher_samples": 1024, "fisher_batch": 32}

    def __init__(self, **params):
        super().__init__(**params)
        p = self.params
        if p["fisher"] not in FISHERS:
            raise UserError(f"unknown EWC fisher {p['fisher']!r}; choose one of: {', '.join(FISHERS)}")
        if p["mode"] not in MODES:
            raise UserError(f"unknown EWC mode {p['mode']!r}; choose one of: {', '.join(MODES)}")
        if p["ewc_lambda"] < 0:
            raise UserError(f"ewc_lambda must be >= 0, got {p['ewc_lambda']}")
        self.anchors: list[tuple[list[torch.Tensor], list[torch.Tensor]]] = []  # (F, w*)

    def optimizer(self, params):
        return torch.optim.SGD(params, lr=self.params["lr"])

    def penalty(self, model):
        if not self.anchors:
            return None
        params = [p for p in model.parameters() if p.requires_grad]
        total = params[0].new_zeros(())
        for fisher, star in self.anchors:
            for w, f, s in zip(params, fisher, star):
                total = total + (f * (w - s).pow(2)).sum()
        return 0.5 * self.params["ewc_lambda"] * total

    def end_task(self, task_index, model, train_x, train_y):
        fisher = self.fisher(model, train_x, train_y)
        star = [p.detach().clone() for p in model.parameters() if p.requires_grad]
        if self.params["mode"] == "online" and self.anchors:
            old, _ = self.anchors[0]
            fisher = [self.params["gamma"] * o + f for o, f in zip(old, fisher)]
            self.anchors = [(fisher, star)]
        else:
            self.anchors.append((fisher, star))

    def own_tensors(self):
        return [t for fisher, star in self.anchors for t in (*fisher, *star)]

    # -- the Fisher -----------------------------------------------------------------------
    def fisher(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
        n = min(len(y), int(self.params["fisher_samples"]))
        x, y = x[:n], y[:n]
        was_training = model.training
        model.eval()  # no dropout: the Fisher of the model as it will be evaluated
        try:
            if self.params["fisher"] == "batch":
                return _batch_fisher(model, x, y, int(self.params["fisher_batch"]))
            return _sample_fisher(model, x, y)
        finally:
            model.train(was_training)


def _batch_fisher(model, x, y, batch):
    params = [p for p in model.parameters() if p.requires_grad]
    total = [torch.zeros_like(p) for p in params]
    batches = 0
    for start in range(0, len(y), batch):
        loss = F.cross_entropy(model(x[start:start + batch]), y[start:start + batch])
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        for t, g in zip(total, grads):
            if g is not None:
                t.add_(g.pow(2))
        batches += 1
    return [t / max(batches, 1) for t in total]


def _sample_fisher(model, x, y, chunk: int = 256):
    """Per-sample squared gradients with torch.func (vmap over grad), in chunks."""
    from torch.func import functional_call, grad, vmap

    names = [n for n, p in model.named_parameters() if p.requires_grad]
    params = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
    buffers = dict(model.named_buffers())

    def loss_one(theta, xi, yi):
        out = functional_call(model, (theta, buffers), (xi.unsqueeze(0),))
        return F.cross_entropy(out, yi.unsqueeze(0))

    per_sample = vmap(grad(loss_one), in_dims=(None, 0, 0))
    total = {n: torch.zeros_like(p) for n, p in params.items()}
    for start in range(0, len(y), chunk):
        try:
            grads = per_sample(params, x[start:start + chunk], y[start:start + chunk])
            for n in names:
                total[n].add_(grads[n].pow(2).sum(0))
        except RuntimeError:  # an op without a batching rule: one sample at a time
            for i in range(start, min(start + chunk, len(y))):
                g = grad(loss_one)(params, x[i], y[i])
                for n in names:
                    total[n].add_(g[n].pow(2))
    return [total[n] / max(len(y), 1) for n in names]
