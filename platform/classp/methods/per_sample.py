"""Sums over samples of per-sample gradients, squared or absolute (EWC's Fisher, MAS's
importance), without materialising one gradient per sample where the model allows it.

For a linear layer y = W a + b, a sample's gradient of W is the outer product of the
gradient at its output, d, with its input, a: so the sum over samples of its square is
(d^2)^T (a^2), and of its absolute value |d|^T |a|: one matrix product per layer for a
whole chunk of samples, instead of a (chunk x weights) tensor of gradients. That holds for
networks whose every trainable parameter belongs to a linear layer applied once per
forward pass (the MLPs); other models take torch.func's vmap over per-sample gradients.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn


def linear_layers(model: nn.Module) -> list[nn.Linear] | None:
    """The model's linear layers, if they hold every trainable parameter; else None."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    owned = {id(p) for m in linears for p in m.parameters() if p.requires_grad}
    every = {id(p) for p in model.parameters() if p.requires_grad}
    return linears if owned == every else None


def mean_over_samples(model: nn.Module, x: Tensor, terms: Callable[[int, int], list], kind: str,
                      chunk: int = 256) -> list[Tensor] | None:
    """Per trainable parameter, the mean over the samples of x of the sum over `terms` of
    (weight times) the squared or absolute per-sample gradient; None where the closed form
    does not apply (the caller takes torch.func's per-sample gradients). `terms(start,
    stop)` gives, for the samples x[start:stop], the (losses, weights or None) pairs: losses
    maps the model's output to one loss per sample."""
    linears = linear_layers(model)
    if linears is None:
        return None
    params = [p for p in model.parameters() if p.requires_grad]
    total = [torch.zeros_like(p) for p in params]
    for start in range(0, len(x), chunk):
        stop = min(start + chunk, len(x))
        for losses, weights in terms(start, stop):
            sums = linear_sums(model, linears, x[start:stop], losses, kind, weights)
            for t, p in zip(total, params):
                t.add_(sums[id(p)])
    return [t / max(len(x), 1) for t in total]


def linear_sums(model: nn.Module, linears: list[nn.Linear], x: Tensor,
                losses: Callable[[Tensor], Tensor], kind: str,
                weights: Tensor | None = None) -> dict[int, Tensor]:
    """For each parameter (by id), the sum over the samples of x of (weight_i times) the
    square ("square") or absolute value ("abs") of the gradient of `losses(model(x))[i]`.
    A layer the forward pass does not reach (another task's head) gets zeros."""
    inputs: dict[nn.Linear, Tensor] = {}
    outputs: dict[nn.Linear, Tensor] = {}

    def keep(module, args, out):
        inputs[module], outputs[module] = args[0].detach(), out

    handles = [m.register_forward_hook(keep) for m in linears]
    try:
        per_sample = losses(model(x))
    finally:
        for handle in handles:
            handle.remove()
    reached = [m for m in linears if m in outputs]
    grads = torch.autograd.grad(per_sample.sum(), [outputs[m] for m in reached], allow_unused=True)
    sums: dict[int, Tensor] = {}
    for m in linears:
        sums[id(m.weight)] = torch.zeros_like(m.weight)
        if m.bias is not None:
            sums[id(m.bias)] = torch.zeros_like(m.bias)
    for m, d in zip(reached, grads):
        if d is None:
            continue
        a = inputs[m]
        d, a = (d.pow(2), a.pow(2)) if kind == "square" else (d.abs(), a.abs())
        if weights is not None:
            d = d * weights.unsqueeze(1)
        sums[id(m.weight)] += d.T @ a
        if m.bias is not None:
            sums[id(m.bias)] += d.sum(0)
    return sums


def functional_parts(model: nn.Module) -> tuple[list[str], dict[str, Tensor], dict[str, Tensor]]:
    """What torch.func's per-sample gradients need: the trainable parameters' names, the
    parameters (detached) and the buffers, by name."""
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    params = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
    return names, params, dict(model.named_buffers())
