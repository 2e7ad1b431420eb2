"""CLASSP's fused path (``fused=True``): each tensor's whole update as one kernel that
torch.compile generates. See :mod:`classp.optim` for the rules.
"""

from __future__ import annotations

import math

import torch

from classp.optim_flat import avoid_zero_over_zero, powered_, root_

# --------------------------------------------------------------------------------------
# Fused: every rule as one loop of tensor expressions, which torch.compile (Inductor)
# turns into one generated kernel per tensor: each weight is read and written once per
# step. Compiled on the first step of each setting (seconds; cached on disk by Inductor).
# --------------------------------------------------------------------------------------


def _fused_rule(params, grads, sums, counts, lr, sqrt_threshold, *, eps, power, decay, rule,
                masked, maximize):
    """The three rules as the flat path computes them, written so that the compiler can
    fuse them: the same operations in the same order (equal up to rounding: the compiler
    may contract a multiply and an add where eager torch does not, and the root may round
    differently). The in-place helpers act on temporaries here, which the compiler turns
    into plain values."""
    alpha = lr if maximize else -lr
    for i in range(len(params)):
        g, eps_plus_s = grads[i], sums[i]
        a = g.abs()
        if rule == "reference-code":
            if counts is not None:
                counts[i].add_((a > 0).to(counts[i].dtype))
            eps_plus_s.add_(a)  # |g| whatever the power, as published
            h, divisor = g, (root_(eps_plus_s.clone(), power) if decay else None)
        else:
            mask = ~(a <= sqrt_threshold)  # g^2 > threshold; a NaN passes, as on the other paths
            h = torch.where(mask, g, 0.0) if masked else g  # hardshrink in the flat path
            if counts is not None:
                counts[i].add_((mask & (g != 0)).to(counts[i].dtype))
            before = eps_plus_s.sqrt() if rule == "equation" and decay else None
            # Algorithm 1 adds masked gradients only; equation (1) adds every gradient.
            eps_plus_s.add_(powered_(h.abs() if rule == "algorithm" else a, power))
            divisor = (before if rule == "equation" else root_(eps_plus_s.clone(), power)) if decay else None
        if divisor is None:
            params[i].add_(alpha * h)
        else:
            avoid_zero_over_zero(divisor, eps)
            params[i].add_(alpha * h / divisor)  # in the order of the flat path's addcdiv


_COMPILED_RULE = None


def fused_classp(params, grads, sums, counts, *, lr, threshold, power, eps, decay, rule,
                  maximize) -> None:
    global _COMPILED_RULE
    if rule == "reference-code" and threshold >= 1.0:
        return  # nothing moves, not even s (see the flat path)
    if _COMPILED_RULE is None:
        _COMPILED_RULE = torch.compile(_fused_rule, dynamic=False)
    # Tensors, not numbers, for what a schedule changes: a new number would recompile.
    like = dict(device=params[0].device, dtype=params[0].dtype)
    _COMPILED_RULE(params, grads, sums, counts, torch.tensor(lr, **like),
                   torch.tensor(math.sqrt(threshold), **like), eps=eps, power=power,
                   decay=decay, rule=rule, masked=threshold > 0, maximize=maximize)
