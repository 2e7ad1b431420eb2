"""Memory Aware Synapses (Aljundi et al. 2018).

A weight's importance is how much the network's output moves with it, measured without
labels: Omega_i = mean over samples x of |d ||f(x)||^2 / d w_i|, where f(x) is the output
(the logits of the task's head; under class-incremental training the classes seen so
far). Importances add up over tasks (Omega += Omega_new) and the weights at the end of the
latest task are the anchor: later tasks add (lambda / 2) * sum_i Omega_i (w_i - w*_i)^2.

estimate "sample" (default) takes each sample's gradient, as the paper defines it;
"batch" is Hsu et al.'s code: per mini-batch of `importance_batch`, the gradient of the
batch mean of f(x)^2 over samples and outputs, its absolute value averaged over batches
(cheaper, and smaller). Their penalty has no 1/2: their coefficient c is our lambda = 2c.
"""

from __future__ import annotations

import torch
from torch.func import functional_call, grad, vmap

from classp.methods.base import STEPPED_BY, SteppedBy
from classp.methods.params import Param
from classp.methods.per_sample import functional_parts, mean_over_samples
from classp.scenarios import seen_count, seen_outputs

ESTIMATES = ("sample", "batch")


class MAS(SteppedBy):
    name = "mas"
    PARAMS = {**STEPPED_BY, "mas_lambda": Param(1.0, "penalty weight", low=0),
              "estimate": Param("sample", "importance per sample or per batch", choices=ESTIMATES),
              "importance_samples": Param(1024, "samples the importance is estimated on", low=1),
              "importance_batch": Param(128, "batch of the importance estimate", low=1)}

    def __init__(self, **params):
        super().__init__(**params)
        self.omega: list[torch.Tensor] = []
        self.anchor: list[torch.Tensor] = []

    def penalty(self, model):
        if not self.anchor:
            return None
        params = [p for p in model.parameters() if p.requires_grad]
        total = sum((o * (p - a).pow(2)).sum() for o, p, a in zip(self.omega, params, self.anchor))
        return 0.5 * self.params["mas_lambda"] * total

    def end_task(self, task_index, model, train_x, train_y):
        n = min(len(train_x), int(self.params["importance_samples"]))
        was_training = model.training
        model.eval()  # the output as it will be evaluated: no dropout
        try:
            if self.params["estimate"] == "batch":
                new = batch_importance(model, train_x[:n], int(self.params["importance_batch"]))
            else:
                new = sample_importance(model, train_x[:n])
        finally:
            model.train(was_training)
        self.omega = new if not self.omega else [o + w for o, w in zip(self.omega, new)]
        self.anchor = [p.detach().clone() for p in model.parameters() if p.requires_grad]

    def own_tensors(self):
        return [*self.omega, *self.anchor]


def sample_importance(model, x, chunk: int = 256) -> list[torch.Tensor]:
    """mean over samples of |d ||f(x)||^2 / dw|: closed form for linear layers
    (classp.methods.per_sample), else per-sample gradients by torch.func."""
    closed = mean_over_samples(model, x, lambda start, stop: [(
        lambda out: seen_outputs(model, out).pow(2).sum(1), None)], "abs", chunk)
    if closed is not None:
        return closed
    names, params, buffers = functional_parts(model)

    def squared_norm(theta, xi):
        out = functional_call(model, (theta, buffers), (xi.unsqueeze(0),))
        return seen_outputs(model, out).pow(2).sum()

    per_sample = vmap(grad(squared_norm), in_dims=(None, 0))
    total = {n: torch.zeros_like(p) for n, p in params.items()}
    for start in range(0, len(x), chunk):
        grads = per_sample(params, x[start:start + chunk])
        for n in names:
            total[n].add_(grads[n].abs().sum(0))
    return [total[n] / max(len(x), 1) for n in names]


def batch_importance(model, x, batch: int) -> list[torch.Tensor]:
    """Hsu et al.'s estimate: mean over batches of |d mean(f(x)^2) / dw|."""
    params = [p for p in model.parameters() if p.requires_grad]
    total = [torch.zeros_like(p) for p in params]
    batches = 0
    for start in range(0, len(x), batch):
        out = model(x[start:start + batch])
        # the mean over samples and the outputs seen (Hsu's `pred[:, :valid_out_dim]`)
        loss = seen_outputs(model, out).pow(2).sum() / (len(out) * seen_count(model, out))
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        for t, g in zip(total, grads):
            if g is not None:
                t.add_(g.abs())
        batches += 1
    return [t / max(batches, 1) for t in total]
