r"""The CLASSP optimizer (Ludwig 2024, arXiv 2405.09637).

Continual Learning through Adjustment Suppression and Sparsity Promotion.
The paper states its update rule three different ways; this module offers all
three, by name, so that results can be attributed to the rule that made them
(see ``rule`` below and ``DESIGN.md``).

Layout copies ``torch/optim/adagrad.py``: validated ``defaults``, ``_init_group``,
a functional entry point :func:`classp` that dispatches to a readable
single-tensor reference (:func:`_single_tensor_classp`) and a
``torch._foreach_*`` path (:func:`_multi_tensor_classp`).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch
from torch import Tensor
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors
from torch.optim.optimizer import Optimizer

__all__ = ["CLASSP", "RULES", "classp"]

#: The three statements of the update rule, see :class:`CLASSP`.
RULES = ("algorithm", "equation", "reference-code")


def _check_finite_number(name: str, value: Any, allowed: str, ok) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"Invalid {name}: {value!r} is not a number; allowed: {allowed}")
    if not math.isfinite(value) or not ok(value):
        raise ValueError(f"Invalid {name}: {value!r}; allowed: {allowed}")


def validate_hyperparameters(lr, threshold, power, eps, decay, rule) -> None:
    """Raise ``ValueError`` naming the first bad argument and its allowed range."""
    _check_finite_number("lr", lr, "a finite number >= 0", lambda v: v >= 0)
    _check_finite_number("threshold", threshold, "a finite number >= 0", lambda v: v >= 0)
    _check_finite_number("power", power, "a finite number > 0", lambda v: v > 0)
    _check_finite_number("eps", eps, "a finite number >= 0", lambda v: v >= 0)
    if not isinstance(decay, bool):
        raise ValueError(f"Invalid decay: {decay!r}; allowed: True or False")
    if rule not in RULES:
        raise ValueError(f"Invalid rule: {rule!r}; allowed: {', '.join(RULES)}")


class CLASSP(Optimizer):
    r"""CLASSP: adjustment suppression and sparsity promotion, per weight.

    For every weight :math:`w` with gradient :math:`g` and accumulated
    adjustment :math:`s` (one float per weight, kept across tasks), the default
    ``rule="algorithm"`` (Algorithm 1 of the paper) does

    .. math::
        \begin{aligned}
        &\textbf{if } g^2 > \text{threshold}: \\
        &\quad s \leftarrow s + |g|^p \\
        &\quad w \leftarrow w - \text{lr}\; g / (\epsilon + s)^{1/p}
            \quad\text{(decay on)} \qquad
            w \leftarrow w - \text{lr}\; g \quad\text{(decay off)} \\
        &\textbf{else}: w, s \text{ unchanged}
        \end{aligned}

    With ``power=2`` and ``threshold=0`` this is AdaGrad with ``eps`` inside the
    square root.

    The two other rules reproduce the paper's other statements:

    * ``rule="equation"``: equation (1). The denominator is
      :math:`\sqrt{\epsilon + \sum_{k<t} |g_k|^p}`: past gradients only, all of
      them (a gradient below the threshold still enters the sum), and a square
      root whatever ``power`` is. The current :math:`|g|^p` is added after the step.
    * ``rule="reference-code"``: what the published ``CLASSP.py`` does. Its
      test ``(grad**2).any() > threshold`` compares a boolean with the
      threshold, so the mask is per *tensor*: any threshold below 1 never masks
      anything, and a threshold of 1 or more masks everything. It adds
      :math:`|g|` to ``s`` whatever ``power`` is and divides by
      :math:`(s + \epsilon)^{1/p}`.

    Every hyper-parameter is a per-group setting and may be changed between
    tasks (the paper switches ``threshold`` and ``decay`` when its second task
    starts); the accumulated ``s`` is kept.

    Args:
        params: parameters or parameter groups.
        lr: learning rate (>= 0).
        threshold: squared-gradient threshold below which a weight is left
            alone (>= 0).
        power: the exponent ``p`` (> 0).
        eps: added to the accumulator before the root (>= 0).
        decay: divide the step by the accumulated adjustment ("adjustment
            suppression"); ``False`` takes plain masked SGD steps while still
            accumulating ``s``.
        rule: ``"algorithm"``, ``"equation"`` or ``"reference-code"``.
        foreach: ``None`` or ``True`` (the default): the flat multi-tensor
            implementation, the fast one on a CPU and on a GPU. ``False``: the
            single-tensor reference, one statement per line of the paper.
        maximize: maximise the objective instead of minimising it.
        track_updates: keep, per weight, how many steps moved it (passed the mask with a
            non-zero gradient; ``state[p]["update_count"]``, float32, on the parameter's
            device).
            Counting is one in-place add per tensor and never synchronises
            with the host; :meth:`update_counts` reads them.
    """

    def __init__(
        self,
        params,
        lr: float = 1e-2,
        threshold: float = 0.0,
        power: float = 1.0,
        eps: float = 1e-5,
        decay: bool = True,
        rule: str = "algorithm",
        *,
        foreach: bool | None = None,
        maximize: bool = False,
        track_updates: bool = False,
    ):
        validate_hyperparameters(lr, threshold, power, eps, decay, rule)
        defaults = dict(
            lr=lr,
            threshold=threshold,
            power=power,
            eps=eps,
            decay=decay,
            rule=rule,
            foreach=foreach,
            maximize=maximize,
            track_updates=bool(track_updates),  # in defaults, so that pickling keeps it
        )
        super().__init__(params, defaults)
        self._workspace = _Workspace()

    @property
    def track_updates(self) -> bool:
        return bool(self.defaults.get("track_updates", False))

    def __setstate__(self, state):
        super().__setstate__(state)
        self._workspace = _Workspace()
        for group in self.param_groups:
            group.setdefault("foreach", None)
            group.setdefault("maximize", False)
            group.setdefault("decay", True)
            group.setdefault("rule", "algorithm")

    def _init_group(self, group, params, grads, sums, counts) -> None:
        new_state = False
        for p in group["params"]:
            if p.grad is None:
                continue
            if p.grad.is_sparse:
                raise RuntimeError("CLASSP does not support sparse gradients; use dense gradients")
            if torch.is_complex(p):
                raise RuntimeError("CLASSP does not support complex parameters")
            state = self.state[p]
            if "sum" not in state or (self.track_updates and "update_count" not in state):
                new_state = True
                state.setdefault("sum", torch.zeros_like(p, memory_format=torch.contiguous_format))
                if self.track_updates:
                    count_dtype = torch.float64 if p.dtype == torch.float64 else torch.float32
                    state.setdefault("update_count", torch.zeros_like(p, dtype=count_dtype))
            params.append(p)
            grads.append(p.grad)
        if new_state:
            self._lay_out_state_flat(params)
        for p in params:
            sums.append(self.state[p]["sum"])
            if self.track_updates:
                counts.append(self.state[p]["update_count"])

    def _lay_out_state_flat(self, params: list[Tensor]) -> None:
        """Make each state kind consecutive views of one flat buffer (see the multi-tensor
        path). Values are kept; only their memory moves."""
        keys = ["sum"] + (["update_count"] if self.track_updates else [])
        for key in keys:
            views = lay_out_flat([self.state[p][key] for p in params])
            for p, view in zip(params, views):
                self.state[p][key] = view

    def load_state_dict(self, state_dict) -> None:
        super().load_state_dict(state_dict)
        self._workspace.clear()
        for group in self.param_groups:
            params = [p for p in group["params"] if "sum" in self.state.get(p, {})]
            if params and (not self.track_updates
                           or all("update_count" in self.state[p] for p in params)):
                self._lay_out_state_flat(params)

    @torch.no_grad()
    def step(self, closure=None):
        """Perform one optimisation step.

        Args:
            closure: re-evaluates the model and returns the loss (optional).
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()

        for group in self.param_groups:
            # Settings may have been edited between tasks: check them again (cheap, host-only).
            validate_hyperparameters(
                group["lr"], group["threshold"], group["power"], group["eps"],
                group["decay"], group["rule"],
            )
            params: list[Tensor] = []
            grads: list[Tensor] = []
            sums: list[Tensor] = []
            counts: list[Tensor] = []
            self._init_group(group, params, grads, sums, counts)
            if not params:
                continue
            classp(
                params,
                grads,
                sums,
                counts if self.track_updates else None,
                lr=group["lr"],
                threshold=group["threshold"],
                power=group["power"],
                eps=group["eps"],
                decay=group["decay"],
                rule=group["rule"],
                foreach=group["foreach"],
                maximize=group["maximize"],
                workspace=self._workspace,
            )
        return loss

    def update_counts(self) -> dict[Tensor, Tensor]:
        """Per-weight update counts, keyed by parameter (empty unless ``track_updates``)."""
        return {
            p: self.state[p]["update_count"]
            for group in self.param_groups
            for p in group["params"]
            if "update_count" in self.state.get(p, {})
        }

    def accumulator_bytes(self) -> int:
        """Bytes of state CLASSP keeps across tasks: the accumulator ``s``."""
        return sum(
            s["sum"].numel() * s["sum"].element_size() for s in self.state.values() if "sum" in s
        )


def classp(
    params: list[Tensor],
    grads: list[Tensor],
    sums: list[Tensor],
    counts: list[Tensor] | None = None,
    *,
    lr: float,
    threshold: float,
    power: float,
    eps: float,
    decay: bool,
    rule: str = "algorithm",
    foreach: bool | None = None,
    maximize: bool = False,
    workspace: _Workspace | None = None,
) -> None:
    """Functional CLASSP: update ``params`` and ``sums`` (and ``counts``) in place.

    ``workspace`` (multi-tensor path only) keeps scratch memory between calls."""
    if rule not in RULES:
        raise ValueError(f"Invalid rule: {rule!r}; allowed: {', '.join(RULES)}")
    if foreach is None:
        foreach = _default_foreach(params)
    if foreach and torch.jit.is_scripting():
        raise RuntimeError("torch.jit.script is not supported with foreach optimizers")
    hyper = dict(lr=lr, threshold=threshold, power=power, eps=eps, decay=decay, rule=rule,
                 maximize=maximize)
    if foreach:
        _multi_tensor_classp(params, grads, sums, counts, workspace=workspace, **hyper)
    else:
        _single_tensor_classp(params, grads, sums, counts, **hyper)


def _default_foreach(params: list[Tensor]) -> bool:
    """The flat path, on every device: unlike torch's own optimizers (which pick the
    single-tensor loop on a CPU), ours gathers the gradients into one buffer, which is
    several times faster on a CPU too (benchmarks/optimizer_step.py). The reference loop
    remains for what the flat path cannot take (scripting, tensor subclasses)."""
    if torch.jit.is_scripting():
        return False
    return all(type(p) in (Tensor, torch.nn.Parameter) and p.layout == torch.strided for p in params)


# --------------------------------------------------------------------------------------
# Single tensor: the readable reference. One statement per line of the paper.
# --------------------------------------------------------------------------------------


def _single_tensor_classp(
    params, grads, sums, counts, *, lr, threshold, power, eps, decay, rule, maximize
) -> None:
    for i, (param, grad, s) in enumerate(zip(params, grads, sums)):
        g = -grad if maximize else grad
        if rule == "algorithm":
            mask = g.abs() > math.sqrt(threshold)  # per weight: g^2 > threshold
            s.add_(torch.where(mask, _powered_(g.abs(), power), 0))
            step = g / _root_(s + eps, power) if decay else g
        elif rule == "equation":
            mask = g.abs() > math.sqrt(threshold)  # per weight: g^2 > threshold
            step = g / (s + eps).sqrt() if decay else g  # past gradients only, square root
            s.add_(_powered_(g.abs(), power))  # every gradient counts, masked or not
        else:  # "reference-code"
            # `(grad**2).any() > threshold`: a 0-d bool compared with a float. Kept as a
            # tensor (no `if`) so that nothing synchronises with the host.
            mask = (g * g).any() > threshold  # per tensor
            s.add_(torch.where(mask, g.abs(), 0))  # |g|, the power is discarded
            step = g / _root_(s + eps, power) if decay else g
        param.sub_(torch.where(mask, step, 0), alpha=lr)
        if counts is not None:  # the weights this step moved
            counts[i].add_(mask & (g != 0))


# --------------------------------------------------------------------------------------
# Multi tensor: the same arithmetic once over a flat buffer per device and dtype.
#
# On a CPU every torch._foreach_* op still dispatches once per tensor, so a rule of ten
# elementwise ops over 200 small tensors costs 2000 dispatches. Gradients are gathered
# into one flat buffer instead (one copy), the rule runs once on it, and the step is
# scattered back with a single foreach op. The optimizer lays `s` out as consecutive
# views of one flat buffer, so the accumulator is updated in place, never copied.
# --------------------------------------------------------------------------------------


def _multi_tensor_classp(
    params, grads, sums, counts, *, lr, threshold, power, eps, decay, rule, maximize,
    workspace: _Workspace | None = None,
) -> None:
    workspace = workspace if workspace is not None else _Workspace()
    tensor_lists = [params, grads, sums] + ([counts] if counts is not None else [])
    grouped = Optimizer._group_tensors_by_device_and_dtype(tensor_lists)
    for (device_params, device_grads, device_sums, *rest), _ in grouped.values():
        device_counts = rest[0] if rest else None
        if rule == "reference-code" and threshold >= 1.0:
            # `(grad**2).any() > threshold` compares a boolean (0 or 1) with the threshold:
            # from 1 up it is never true and nothing moves, not even s.
            continue
        flat_sum, sum_is_view = _as_flat(device_sums)
        flat_count, count_is_view = (None, True)
        if device_counts is not None:
            flat_count, count_is_view = _as_flat(device_counts)
        # The equation rule needs s before and |g| after the step: a third buffer.
        buffers = workspace.buffers(device_params, 3 if rule == "equation" else 2)
        (work, work_views), (mask, mask_views) = buffers[:2]
        spare = buffers[2][0] if rule == "equation" else None

        torch._foreach_copy_(work_views, device_grads)
        flat = _Flat(work.abs_(), mask, mask_views, work_views, spare, flat_sum, flat_count)
        # Each rule updates s (and the counts) in place and returns views of the factor f
        # of the step w <- w - lr * g * f, or None for f = 1 everywhere.
        factor_views = _FLAT_RULES[rule](flat, threshold=threshold, power=power, eps=eps, decay=decay)

        # w <- w - lr * g * factor; maximising flips the sign of g, and only its sign matters.
        alpha = lr if maximize else -lr
        if factor_views is None:
            torch._foreach_add_(device_params, device_grads, alpha=alpha)
        else:
            torch._foreach_addcmul_(device_params, device_grads, factor_views, value=alpha)

        if not sum_is_view:
            torch._foreach_copy_(device_sums, _unflatten_dense_tensors(flat_sum, device_sums))
        if not count_is_view:
            torch._foreach_copy_(device_counts, _unflatten_dense_tensors(flat_count, device_counts))


class _Flat(NamedTuple):
    """The flat buffers of one device and dtype: |g| (in the work buffer, which the rule
    may overwrite), the mask buffer, views of both shaped like the parameters, a spare
    buffer (equation rule only), the accumulator ``s`` and the update counts (or None)."""

    abs_grad: Tensor
    mask: Tensor
    mask_views: list[Tensor]
    work_views: list[Tensor]
    spare: Tensor | None
    s: Tensor
    count: Tensor | None


def _flat_reference_code(f: _Flat, *, threshold, power, eps, decay):
    """What the published code does (reached only with threshold < 1): its test passes for
    every tensor with a non-zero gradient, and an all-zero gradient changes nothing, so
    nothing needs masking. The weights that move are those with g != 0."""
    if f.count is not None:
        f.count.add_(torch.gt(f.abs_grad, 0.0, out=f.mask))
    f.s.add_(f.abs_grad)  # |g| whatever the power
    if not decay:
        return None
    work = _root_(torch.add(f.s, eps, out=f.abs_grad), power)
    _avoid_zero_over_zero(work, eps)
    work.reciprocal_()
    return f.work_views


def _mask(f: _Flat, threshold: float) -> bool:
    """1.0 where g^2 > threshold, else 0.0, compared as |g| > sqrt(threshold) like the
    single-tensor path (one pass fewer). Returns whether the step needs the mask: with
    threshold 0 a weight whose gradient is exactly 0 adds nothing to s and does not move."""
    torch.gt(f.abs_grad, math.sqrt(threshold), out=f.mask)
    if f.count is not None:
        f.count.add_(f.mask)
    return threshold > 0


def _flat_algorithm(f: _Flat, *, threshold, power, eps, decay):
    """Algorithm 1: s += |g|^p where masked; the step divides by (eps + s)^(1/p)."""
    masked = _mask(f, threshold)
    increment = _powered_(f.abs_grad, power)
    f.s.addcmul_(increment, f.mask) if masked else f.s.add_(increment)
    if not decay:
        return f.mask_views if masked else None
    denom = _root_(torch.add(f.s, eps, out=f.abs_grad), power)
    return _divided_by(f, denom, eps, masked)


def _flat_equation(f: _Flat, *, threshold, power, eps, decay):
    """Equation (1): past gradients only, a square root whatever the power; every gradient
    counts towards s, masked or not."""
    masked = _mask(f, threshold)
    denom = torch.add(f.s, eps, out=f.spare).sqrt_() if decay else None
    f.s.add_(_powered_(f.abs_grad, power))
    if not decay:
        return f.mask_views if masked else None
    return _divided_by(f, denom, eps, masked)


def _divided_by(f: _Flat, denom: Tensor, eps: float, masked: bool) -> list[Tensor]:
    """Views of the step factor mask / denom (or 1 / denom)."""
    _avoid_zero_over_zero(denom, eps)
    if masked:
        f.mask.div_(denom)
        return f.mask_views
    torch.reciprocal(denom, out=f.abs_grad)
    return f.work_views


_FLAT_RULES = {"algorithm": _flat_algorithm, "equation": _flat_equation,
               "reference-code": _flat_reference_code}


class _Workspace:
    """Flat scratch memory for the multi-tensor path, kept between steps so that the hot
    loop allocates nothing (on a CPU a fresh multi-megabyte buffer costs page faults every
    step): two buffers (three for the equation rule), each with views shaped like the
    parameters. Costs two or three floats per weight while the optimizer lives; it is not
    optimizer state (not in state_dict)."""

    _MAX_LAYOUTS = 4  # a different set of parameters with gradients gets its own entry

    def __init__(self) -> None:
        self._layouts: dict[tuple, tuple] = {}

    def buffers(self, params: list[Tensor], n: int = 2) -> list[tuple[Tensor, list[Tensor]]]:
        """`n` flat buffers, each with its views shaped like `params`."""
        key = (n, *map(id, params))
        found = self._layouts.get(key)
        if found is None:
            total = sum(p.numel() for p in params)
            flat = torch.empty(n * total, device=params[0].device, dtype=params[0].dtype)
            found = []
            for i in range(n):
                part = flat[i * total:(i + 1) * total]
                found.append((part, _unflatten_dense_tensors(part, params)))
            if len(self._layouts) >= self._MAX_LAYOUTS:
                self._layouts.pop(next(iter(self._layouts)))
            self._layouts[key] = found
        return found

    def clear(self) -> None:
        self._layouts.clear()


def _powered_(x: Tensor, power: float) -> Tensor:
    """x ** power in place, with the cheap special cases p = 1 and p = 2."""
    if power == 1.0:
        return x
    if power == 2.0:
        return x.mul_(x)
    return x.pow_(power)


def _root_(x: Tensor, power: float) -> Tensor:
    """x ** (1 / power) in place."""
    if power == 1.0:
        return x
    if power == 2.0:
        return x.sqrt_()
    return x.pow_(1.0 / power)


def _avoid_zero_over_zero(denom: Tensor, eps: float) -> None:
    """With eps = 0 a weight that never moved has denominator 0, and its factor would be
    0/0 or g * inf = NaN instead of 0. Where a weight moves, s >= |g|^p > 0 already."""
    if eps == 0:
        denom.clamp_min_(torch.finfo(denom.dtype).tiny)


def _as_flat(tensors: list[Tensor]) -> tuple[Tensor, bool]:
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
