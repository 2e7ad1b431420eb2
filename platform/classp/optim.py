r"""The CLASSP optimizer (Ludwig 2024, arXiv 2405.09637).

Continual Learning through Adjustment Suppression and Sparsity Promotion.
The paper states its update rule three different ways; this module offers all
three, by name, so that results can be attributed to the rule that made them
(see ``rule`` below and docs/paper.md).

Layout copies ``torch/optim/adagrad.py``: validated ``defaults``, ``_init_group``,
a functional entry point :func:`classp` that dispatches to a readable
single-tensor reference (:func:`_single_tensor_classp`), a flat
``torch._foreach_*`` path (:func:`_multi_tensor_classp`, the default) and a fused
path compiled by ``torch.compile`` (:func:`_fused_classp`, ``fused=True``).
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


# What every CLASSP param group holds (and another optimizer's does not).
_GROUP_KEYS = ("lr", "threshold", "power", "eps")


def _check_eps_fits(eps: float, dtype: torch.dtype) -> None:
    """The accumulator has the weights' dtype and starts at eps: an eps that rounds to 0
    there divides 0 by 0 on the first step (float16 holds nothing below about 6e-8)."""
    if eps <= 0 or not dtype.is_floating_point:
        return
    info = torch.finfo(dtype)
    smallest = info.smallest_normal * info.eps  # the smallest subnormal (host arithmetic only)
    if eps < smallest / 2:
        raise ValueError(f"Invalid eps: {eps!r} rounds to 0 in {dtype} weights' accumulator; "
                         f"allowed: eps >= {smallest:.3g} for {dtype}, or float32 weights")


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

    A NaN or infinite gradient is not masked: it makes its weight and its accumulator NaN
    or infinite, on every path, as it does in torch's Adagrad (the engine stops such a run
    as diverged). Flags must be booleans, and a ``state_dict`` saved by another optimizer
    is refused when loaded.

    Every hyper-parameter is a per-group setting and may be changed between
    tasks (the paper switches ``threshold`` and ``decay`` when its second task
    starts); the accumulated ``s`` is kept.

    State: ``state[p]["eps_plus_sum"]`` holds :math:`\epsilon + s`, the accumulator with
    ``eps`` already added: it starts at ``eps`` (as Adagrad's starts at
    ``initial_accumulator_value``), so that no step spends a pass over the weights adding
    ``eps`` to the divisor. ``state[p]["eps_in_sum"]`` is the ``eps`` it includes; when a
    group's ``eps`` is edited, the next step shifts the accumulator by the difference,
    once. Subtract ``eps`` to read :math:`s`. A ``state_dict`` (or pickle) saved with a plain
    ``"sum"`` (s, by earlier versions) is converted on loading.

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
            implementation, the fast one on a CPU and on a GPU (three or four passes
            over the weights per step; see ``benchmarks/optimizer_step.py`` and the
            README for its time against torch's fused Adagrad). ``False``: the
            single-tensor reference, one statement per line of the paper; the flat
            path gives its weights bit for bit without decay, and up to rounding with it.
        fused: ``True``: each tensor's whole update as one kernel generated by
            ``torch.compile`` (Inductor) on the first step of each setting, which takes
            seconds (cached on disk by Inductor between processes); then the fastest
            path on a large model on a CPU. Equal to the flat path up to rounding. Off
            by default for that start-up cost, which a run of a few thousand steps
            does not win back.
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
        fused: bool = False,
        maximize: bool = False,
        track_updates: bool = False,
    ):
        validate_hyperparameters(lr, threshold, power, eps, decay, rule)
        # Flags are booleans: a string such as "false" is truthy and would act as True.
        for flag, value in (("fused", fused), ("maximize", maximize), ("track_updates", track_updates)):
            if not isinstance(value, bool):
                raise ValueError(f"Invalid {flag}: {value!r}; allowed: True or False")
        if foreach is not None and not isinstance(foreach, bool):
            raise ValueError(f"Invalid foreach: {foreach!r}; allowed: None, True or False")
        if fused and foreach is False:
            raise ValueError("fused=True and foreach=False ask for two paths; choose one")
        defaults = dict(
            lr=lr,
            threshold=threshold,
            power=power,
            eps=eps,
            decay=decay,
            rule=rule,
            foreach=foreach,
            fused=fused,
            maximize=maximize,
            track_updates=track_updates,  # in defaults, so that pickling keeps it
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
            group.setdefault("fused", False)
            group.setdefault("maximize", False)
            group.setdefault("decay", True)
            group.setdefault("rule", "algorithm")
        self._adopt_plain_sums()

    def _adopt_plain_sums(self) -> None:
        """State saved before the accumulator included eps keeps s under "sum"."""
        for group in self.param_groups:
            for p in group["params"]:
                state = self.state.get(p, {})
                if "sum" in state:
                    state["eps_plus_sum"] = state.pop("sum") + group["eps"]
                    state["eps_in_sum"] = group["eps"]

    def _init_group(self, group, params, grads, sums, counts) -> None:
        new_state = False
        eps = group["eps"]
        for p in group["params"]:
            if p.grad is None:
                continue
            if p.grad.is_sparse:
                raise RuntimeError("CLASSP does not support sparse gradients; use dense gradients")
            if torch.is_complex(p):
                raise RuntimeError("CLASSP does not support complex parameters")
            state = self.state[p]
            if "eps_plus_sum" not in state:
                _check_eps_fits(eps, p.dtype)
                new_state = True
                # s = 0: the accumulator starts at eps (see "State" in the class docstring).
                state["eps_plus_sum"] = torch.full_like(
                    p, eps, memory_format=torch.contiguous_format)
                state["eps_in_sum"] = eps
            elif state["eps_in_sum"] != eps:  # eps was edited between tasks: shift once
                _check_eps_fits(eps, p.dtype)
                state["eps_plus_sum"].add_(eps - state["eps_in_sum"])
                state["eps_in_sum"] = eps
            if self.track_updates and "update_count" not in state:
                new_state = True
                count_dtype = torch.float64 if p.dtype == torch.float64 else torch.float32
                state["update_count"] = torch.zeros_like(p, dtype=count_dtype)
            params.append(p)
            grads.append(p.grad)
        if new_state:
            self._lay_out_state_flat(params)
        for p in params:
            sums.append(self.state[p]["eps_plus_sum"])
            if self.track_updates:
                counts.append(self.state[p]["update_count"])

    def _lay_out_state_flat(self, params: list[Tensor]) -> None:
        """Make each state kind consecutive views of one flat buffer (see the multi-tensor
        path). Values are kept; only their memory moves."""
        keys = ["eps_plus_sum"] + (["update_count"] if self.track_updates else [])
        for key in keys:
            views = lay_out_flat([self.state[p][key] for p in params])
            for p, view in zip(params, views):
                self.state[p][key] = view

    def load_state_dict(self, state_dict) -> None:
        # Another optimizer's state (Adam's, Adagrad's) would load and fail at the first
        # step; say so now, naming what is missing.
        for group in state_dict.get("param_groups", []):
            missing = [k for k in _GROUP_KEYS if k not in group]
            if missing:
                raise ValueError(f"not a CLASSP state_dict: its param groups lack "
                                 f"{', '.join(missing)}; load it into the optimizer that saved it")
        super().load_state_dict(state_dict)
        self._workspace.clear()
        self._adopt_plain_sums()
        for group in self.param_groups:
            params = [p for p in group["params"] if "eps_plus_sum" in self.state.get(p, {})]
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
                fused=group["fused"],
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
        """Bytes of state CLASSP keeps across tasks: the accumulator (``eps + s``)."""
        return sum(s["eps_plus_sum"].numel() * s["eps_plus_sum"].element_size()
                   for s in self.state.values() if "eps_plus_sum" in s)


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
    fused: bool = False,
    maximize: bool = False,
    workspace: _Workspace | None = None,
) -> None:
    """Functional CLASSP: update ``params`` and ``sums`` (and ``counts``) in place.

    ``sums`` hold ``eps + s``, the accumulator with eps already added (start them at
    ``eps``; see "State" in :class:`CLASSP`). ``workspace`` (multi-tensor path only) keeps
    scratch memory between calls."""
    if rule not in RULES:
        raise ValueError(f"Invalid rule: {rule!r}; allowed: {', '.join(RULES)}")
    if foreach is None:
        foreach = _default_foreach(params)
    if foreach and torch.jit.is_scripting():
        raise RuntimeError("torch.jit.script is not supported with foreach optimizers")
    hyper = dict(lr=lr, threshold=threshold, power=power, eps=eps, decay=decay, rule=rule,
                 maximize=maximize)
    if fused:
        _fused_classp(params, grads, sums, counts, **hyper)
    elif foreach:
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
    # Each of `sums` holds eps + s: where the paper divides by (eps + s), this divides by it.
    for i, (param, grad, eps_plus_s) in enumerate(zip(params, grads, sums)):
        g = -grad if maximize else grad
        if rule == "algorithm":
            # per weight: g^2 > threshold, written so that a NaN passes the mask (and
            # poisons the weight and s), as on the flat and fused paths
            mask = ~(g.abs() <= math.sqrt(threshold))
            eps_plus_s.add_(torch.where(mask, _powered_(g.abs(), power), 0))
            step = g / _root_(eps_plus_s.clone(), power) if decay else g
        elif rule == "equation":
            mask = ~(g.abs() <= math.sqrt(threshold))  # per weight: g^2 > threshold; NaN passes
            step = g / eps_plus_s.sqrt() if decay else g  # past gradients only, square root
            eps_plus_s.add_(_powered_(g.abs(), power))  # every gradient counts, masked or not
        else:  # "reference-code"
            # `(grad**2).any() > threshold`: a 0-d bool compared with a float. Kept as a
            # tensor (no `if`) so that nothing synchronises with the host.
            mask = (g * g).any() > threshold  # per tensor
            eps_plus_s.add_(torch.where(mask, g.abs(), 0))  # |g|, the power is discarded
            step = g / _root_(eps_plus_s.clone(), power) if decay else g
        param.sub_(torch.where(mask, step, 0), alpha=lr)
        if counts is not None:  # the weights this step moved
            counts[i].add_(mask & (g != 0))


# --------------------------------------------------------------------------------------
# Multi tensor: the same arithmetic over flat buffers, in as few passes over as few
# buffers as eager torch allows.
#
# On a CPU every torch._foreach_* op still dispatches once per tensor, so a rule of ten
# elementwise ops over 200 small tensors costs 2000 dispatches; and on a large model each
# elementwise op is a pass over every weight, slower the more distinct buffers a step
# touches (benchmarks/optimizer_step.py: the README's construction touches the gradients,
# the weights, s and one scratch buffer, as fused Adagrad touches three). So each rule
# works on flat buffers (one op over all weights), writes what it derives from the
# gradients straight into them, reuses a scratch buffer in place once its content is
# spent, and picks ops that do two things at once: `hardshrink` is g where g^2 > threshold
# (the masked gradient, no separate mask); the weights move by one foreach add or addcdiv.
# The optimizer lays `s` out as consecutive views of one flat buffer, so the accumulator
# is updated in place, never copied.
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
    """s += magnitude^p; when counting, add 1 to the count of every weight whose magnitude
    is above `moved_above`. `magnitude` is spent: the caller may overwrite it.

    The comparison lands in a float buffer (a boolean one, added to floats, is several
    times slower on a CPU); for p = 1 and a bound of 0 (the default rule) in `magnitude`
    itself, once s has taken it, so that counting touches no further buffer."""
    in_place = power == 1.0 and moved_above == 0.0
    if f.count is not None and not in_place:  # before the power, which may underflow to 0
        f.count.add_(torch.gt(magnitude, moved_above, out=f.moved))
    f.s.add_(_powered_(magnitude, power))
    if f.count is not None and in_place:
        f.count.add_(magnitude.gt_(0.0))


def _divisors(f: _Flat, eps: float, power: float, out: _Buffer) -> list[Tensor]:
    """(eps + s)^(1/p), shaped like the parameters. For p = 1 that is the accumulator
    itself, which holds eps + s: no pass. Otherwise, or with eps = 0 (where the 0/0 guard
    must not write to the accumulator), written into `out`."""
    if power == 1.0 and eps > 0:
        return f.s_views
    _avoid_zero_over_zero(_root_into(f.s, power, out.flat), eps)
    return out.views


def _move(f: _Flat, numerators: list[Tensor], divisors: list[Tensor] | None, alpha) -> None:
    """w <- w + alpha * numerator (/ divisor, with decay): one foreach op."""
    if divisors is None:
        torch._foreach_add_(f.params, numerators, alpha=alpha)
    else:
        torch._foreach_addcdiv_(f.params, numerators, divisors, value=alpha)


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
            h, divisor = g, (_root_(eps_plus_s.clone(), power) if decay else None)
        else:
            mask = ~(a <= sqrt_threshold)  # g^2 > threshold; a NaN passes, as on the other paths
            h = torch.where(mask, g, 0.0) if masked else g  # hardshrink in the flat path
            if counts is not None:
                counts[i].add_((mask & (g != 0)).to(counts[i].dtype))
            before = eps_plus_s.sqrt() if rule == "equation" and decay else None
            # Algorithm 1 adds masked gradients only; equation (1) adds every gradient.
            eps_plus_s.add_(_powered_(h.abs() if rule == "algorithm" else a, power))
            divisor = (before if rule == "equation" else _root_(eps_plus_s.clone(), power)) if decay else None
        if divisor is None:
            params[i].add_(alpha * h)
        else:
            _avoid_zero_over_zero(divisor, eps)
            params[i].add_(alpha * h / divisor)  # in the order of the flat path's addcdiv


_COMPILED_RULE = None


def _fused_classp(params, grads, sums, counts, *, lr, threshold, power, eps, decay, rule,
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


class _Workspace:
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


def _powered_(x: Tensor, power: float) -> Tensor:
    """x ** power in place, with the cheap special cases p = 1 and p = 2."""
    if power == 1.0:
        return x
    if power == 2.0:
        return x.mul_(x)
    return x.pow_(power)


def _root_into(x: Tensor, power: float, out: Tensor) -> Tensor:
    """out <- x ** (1 / power), one pass."""
    if power == 1.0:
        return out.copy_(x)
    if power == 2.0:
        return torch.sqrt(x, out=out)
    return torch.pow(x, 1.0 / power, out=out)


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
