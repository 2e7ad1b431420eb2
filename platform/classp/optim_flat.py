"""CLASSP's flat multi-tensor path (``foreach``, the default): the three rules over flat
buffers, and the scratch memory they reuse. See :mod:`classp.optim` for the rules.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors
from torch.optim.optimizer import Optimizer

# --------------------------------------------------------------------------------------
# Multi tensor: the same arithmetic over flat buffers, in as few passes over as few
# buffers as eager torch allows.
#
# On a CPU every torch._foreach_* op still dispatches once per tensor, so a rule of ten
# elementwise ops over 200 small tensors costs 2000 dispatches; and on a large model each
# elementwise op is a pass over every weight, slower the more distinct buffers a step
# touches (benchmarks/optimizer_step.py: docs/optimizer.md's construction touches the gradients,
# the weights, s and one scratch buffer, as fused Adagrad touches three). So each rule
# works on flat buffers (one op over all weights), writes what it derives from the
# gradients straight into them, reuses a scratch buffer in place once its content is
# spent, and picks ops that do two things at once: `hardshrink` is g where g^2 > threshold
# (the masked gradient, no separate mask); the weights move by one foreach add or addcdiv.
# The optimizer lays `s` out as consecutive views of one flat buffer, so the accumulator
# is updated in place, never copied.
# --------------------------------------------------------------------------------------


def multi_tensor_classp(
    params, grads, sums, counts, *, lr, threshold, power, eps, decay, rule, maximize,
    workspace: Workspace | None = None,
) -> None:
    workspace = workspace if workspace is not None else Workspace()
    tensor_lists = [params, grads, sums] + ([counts] if counts is not None else [])
    grouped = Optimizer._group_tensors_by_device_and_dtype(tensor_lists)
    for (device_params, device_grads, device_sums, *rest), _ in grouped.values():
        device_counts = rest[0] if rest else None
        if rule == "reference-code" and threshold >= 1.0:
            # `(grad**2).any() > threshold` compares a boolean (0 or 1) with the threshold:
            # from 1 up it is never true and nothing moves, not even s.
            continue
        flat_sum, sum_is_view = as_flat(device_sums)
        flat_count, count_is_view = (None, True)
        if device_counts is not None:
            flat_count, count_is_view = as_flat(device_counts)
        # Two scratch buffers, and a third for the comparison when counting.
        a, b, *c = workspace.buffers(device_params, 2 if flat_count is None else 3)
        moved = c[0].flat if c else None
        sum_views = device_sums if sum_is_view else _unflatten_dense_tensors(flat_sum, device_sums)
        flat = _Flat(device_params, device_grads, a, b, moved, flat_sum, sum_views, flat_count)
        # w <- w - lr * step; maximising flips the sign of g, and only its sign matters.
        _FLAT_RULES[rule](flat, threshold=threshold, power=power, eps=eps, decay=decay,
                          alpha=lr if maximize else -lr)
        if not sum_is_view:
            torch._foreach_copy_(device_sums, _unflatten_dense_tensors(flat_sum, device_sums))
        if not count_is_view:
            torch._foreach_copy_(device_counts, _unflatten_dense_tensors(flat_count, device_counts))


class _Buffer(NamedTuple):
    """A flat scratch buffer and its views shaped like the parameters."""

    flat: Tensor
    views: list[Tensor]


class _Flat(NamedTuple):
    """One device and dtype: the parameters and gradients (the caller's tensors, never
    written), two scratch buffers, the flat accumulator (eps + s, see "State" in
    :class:`CLASSP`) and its views shaped like the parameters, and when counting, a flat
    scratch buffer for the weights that moved (1.0 or 0.0) and the flat update counts."""

    params: list[Tensor]
    grads: list[Tensor]
    a: _Buffer
    b: _Buffer
    moved: Tensor | None
    s: Tensor
    s_views: list[Tensor]
    count: Tensor | None


def _flat_algorithm(f: _Flat, *, threshold, power, eps, decay, alpha):
    """Algorithm 1: h = g where g^2 > threshold, else 0; s += |h|^p; the weights move by
    h, divided by (eps + s)^(1/p) with decay."""
    masked = threshold > 0
    if masked:
        sqrt_threshold = math.sqrt(threshold)  # g^2 > threshold as |g| > sqrt(threshold)
        _write(f.a, f.grads, lambda g, out: torch.hardshrink(g, sqrt_threshold, out=out))
    numerators = f.a.views if masked else f.grads  # unmasked, h is g where it lies
    if not decay:
        _move(f, numerators, None, alpha)  # h is spent: |h| may overwrite it
    magnitude = f.b if decay and masked else f.a
    if masked:
        torch.abs(f.a.flat, out=magnitude.flat)
    else:
        _write(magnitude, f.grads, torch.abs)
    _accumulate(f, magnitude.flat, power, moved_above=0.0)  # moved: passed the mask, g != 0
    if decay:
        _move(f, numerators, _divisors(f, eps, power, out=magnitude), alpha)


def _flat_equation(f: _Flat, *, threshold, power, eps, decay, alpha):
    """Equation (1): the step divides by sqrt(eps + s) of past gradients only, whatever the
    power; every gradient counts towards s, masked or not."""
    sqrt_threshold = math.sqrt(threshold)
    divisors = _divisors(f, eps, 2.0, out=f.b) if decay else None  # before s changes
    _write(f.a, f.grads, torch.abs)
    _accumulate(f, f.a.flat, power, moved_above=sqrt_threshold)  # |g| > sqrt(threshold)
    if threshold > 0:
        _write(f.a, f.grads, lambda g, out: torch.hardshrink(g, sqrt_threshold, out=out))
    _move(f, f.a.views if threshold > 0 else f.grads, divisors, alpha)


def _flat_reference_code(f: _Flat, *, threshold, power, eps, decay, alpha):
    """What the published code does (reached only with threshold < 1): its test passes for
    every tensor with a non-zero gradient, and an all-zero gradient changes nothing, so
    nothing needs masking. s += |g| whatever the power; the weights that move are those
    with g != 0."""
    _write(f.a, f.grads, torch.abs)
    _accumulate(f, f.a.flat, 1.0, moved_above=0.0)  # |g| whatever the power
    _move(f, f.grads, _divisors(f, eps, power, out=f.a) if decay else None, alpha)


_FLAT_RULES = {"algorithm": _flat_algorithm, "equation": _flat_equation,
               "reference-code": _flat_reference_code}


def _write(out: _Buffer, grads: list[Tensor], op) -> None:
    """out <- op(g) for every gradient, as ``op(tensor, out=tensor)``. Large tensors: one
    pass each, straight into the buffer's views. Many small ones: one foreach copy and op
    over the whole buffer in place, a second pass that costs less than a dispatch per
    tensor would."""
    if out.flat.numel() >= _LARGE_TENSOR * len(grads):
        for g, view in zip(grads, out.views):
            op(g, out=view)
    else:
        torch._foreach_copy_(out.views, grads)
        op(out.flat, out=out.flat)


# From this mean number of elements a tensor up, a dispatch per tensor (microseconds) is
# cheaper than a second pass over the weights (benchmarks/optimizer_step.py: the paper CNN
# of 8 tensors, mean 150k, and an MLP of 200 tensors, mean 528).
_LARGE_TENSOR = 32768


def _accumulate(f: _Flat, magnitude: Tensor, power: float, moved_above: float) -> None:
    accumulate_(f.s, magnitude, power, f.count, moved_above, moved=f.moved)


def accumulate_(s: Tensor, magnitude: Tensor, power: float, count: Tensor | None,
                moved_above: float = 0.0, moved: Tensor | None = None) -> None:
    """s += magnitude^p; when counting (`count`), add 1 to the count of every weight whose
    magnitude is above `moved_above`. `magnitude` is spent: the caller may overwrite it.
    (The stacked rules of a population call it too: classp.population_rules.)

    The comparison lands in a float buffer, `moved` when given (a boolean one, added to
    floats, is several times slower on a CPU); for p = 1 and a bound of 0 (the default
    rule) in `magnitude` itself, once s has taken it, so that counting touches no further
    buffer."""
    in_place = power == 1.0 and moved_above == 0.0
    if count is not None and not in_place:  # before the power, which may underflow to 0
        above = torch.gt(magnitude, moved_above, out=moved) if moved is not None \
            else torch.gt(magnitude, moved_above).to(count.dtype)
        count.add_(above)
    s.add_(powered_(magnitude, power))
    if count is not None and in_place:
        count.add_(magnitude.gt_(0.0))


def _divisors(f: _Flat, eps: float, power: float, out: _Buffer) -> list[Tensor]:
    """divisor_into, shaped like the parameters."""
    return f.s_views if divisor_into(f.s, eps, power, out.flat) is f.s else out.views


def divisor_into(s: Tensor, eps: float, power: float, out: Tensor | None = None) -> Tensor:
    """(eps + s)^(1/p) of an accumulator `s` that holds eps + s. For p = 1 that is `s`
    itself, which is returned: no pass. Otherwise, or with eps = 0 (where the 0/0 guard
    must not write to the accumulator), written into `out` (made if not given), which is
    returned."""
    if power == 1.0 and eps > 0:
        return s
    out = torch.empty_like(s) if out is None else out
    avoid_zero_over_zero(root_into(s, power, out), eps)
    return out


def _move(f: _Flat, numerators: list[Tensor], divisors: list[Tensor] | None, alpha) -> None:
    """w <- w + alpha * numerator (/ divisor, with decay): one foreach op."""
    if divisors is None:
        torch._foreach_add_(f.params, numerators, alpha=alpha)
    else:
        torch._foreach_addcdiv_(f.params, numerators, divisors, value=alpha)


class Workspace:
    """Flat scratch memory for the multi-tensor path, kept between steps so that the hot
    loop allocates nothing (on a CPU a fresh multi-megabyte buffer costs page faults every
    step): two buffers (three when counting updates), each with views shaped like the
    parameters. Costs two or three floats per weight while the optimizer lives; it is not
    optimizer state (not in state_dict)."""

    _MAX_LAYOUTS = 4  # a different set of parameters with gradients gets its own entry

    def __init__(self) -> None:
        self._layouts: dict[tuple, list[_Buffer]] = {}

    def buffers(self, params: list[Tensor], n: int = 2) -> list[_Buffer]:
        """`n` flat buffers, each with its views shaped like `params`."""
        key = (n, *map(id, params))
        found = self._layouts.get(key)
        if found is None:
            total = sum(p.numel() for p in params)
            flat = torch.empty(n * total, device=params[0].device, dtype=params[0].dtype)
            found = []
            for i in range(n):
                part = flat[i * total:(i + 1) * total]
                found.append(_Buffer(part, _unflatten_dense_tensors(part, params)))
            if len(self._layouts) >= self._MAX_LAYOUTS:
                self._layouts.pop(next(iter(self._layouts)))
            self._layouts[key] = found
        return found


    def clear(self) -> None:
        self._layouts.clear()

    def rule_bytes(self) -> int:
        """Bytes of the buffers the rules use (the third, for counting updates, left out)."""
        return sum(2 * layout[0].flat.numel() * layout[0].flat.element_size()
                   for layout in self._layouts.values())


def powered_(x: Tensor, power: float) -> Tensor:
    """x ** power in place, with the cheap special cases p = 1 and p = 2."""
    if power == 1.0:
        return x
    if power == 2.0:
        return x.mul_(x)
    return x.pow_(power)


def root_into(x: Tensor, power: float, out: Tensor) -> Tensor:
    """out <- x ** (1 / power), one pass."""
    if power == 1.0:
        return out.copy_(x)
    if power == 2.0:
        return torch.sqrt(x, out=out)
    return torch.pow(x, 1.0 / power, out=out)


def root_(x: Tensor, power: float) -> Tensor:
    """x ** (1 / power) in place."""
    if power == 1.0:
        return x
    if power == 2.0:
        return x.sqrt_()
    return x.pow_(1.0 / power)


def avoid_zero_over_zero(denom: Tensor, eps: float) -> None:
    """With eps = 0 a weight that never moved has denominator 0, and its factor would be
    0/0 or g * inf = NaN instead of 0. Where a weight moves, s >= |g|^p > 0 already."""
    if eps == 0:
        denom.clamp_min_(torch.finfo(denom.dtype).tiny)


def as_flat(tensors: list[Tensor]) -> tuple[Tensor, bool]:
    """The flat buffer whose consecutive views `tensors` are (True), or a flat copy (False)."""
    base = tensors[0]._base
    if base is not None and base.dim() == 1:
        offset = base.storage_offset()
        for t in tensors:
            if t._base is not base or t.storage_offset() != offset:
                break
            offset += t.numel()
        else:
            if offset - base.storage_offset() == base.numel():
                return base, True
    return _flatten_dense_tensors(tensors), False


def lay_out_flat(tensors: list[Tensor]) -> list[Tensor]:
    """Copy tensors into one flat buffer per device and dtype; return views, in order."""
    out: list[Tensor | None] = [None] * len(tensors)
    buckets: dict[tuple, list[int]] = {}
    for i, t in enumerate(tensors):
        buckets.setdefault((t.device, t.dtype), []).append(i)
    for indices in buckets.values():
        members = [tensors[i] for i in indices]
        flat = torch.cat([m.reshape(-1) for m in members])  # always a fresh buffer
        for i, view in zip(indices, _unflatten_dense_tensors(flat, members)):
            out[i] = view
    return out
