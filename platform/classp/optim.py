r"""The CLASSP optimizer (Ludwig 2024, arXiv 2405.09637).

Continual Learning through Adjustment Suppression and Sparsity Promotion. The paper
states its update rule three ways; all three are here by name, so that a result can be
attributed to the rule that made it (``rule`` below; docs/paper.md).

Laid out as ``torch/optim/adagrad.py``: validated ``defaults``, ``_init_group``, and a
functional :func:`classp` that dispatches to the single-tensor reference (here), the flat
path (:mod:`classp.optim_flat`, the default) or the fused one (:mod:`classp.optim_fused`).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor
from torch.optim.optimizer import Optimizer

from classp.optim_flat import Workspace, lay_out_flat, multi_tensor_classp, powered_, root_
from classp.optim_fused import fused_classp

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
# The settings `validate_hyperparameters` checks, in its order.
_CHECKED_KEYS = ("lr", "threshold", "power", "eps", "decay", "rule")


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

    A NaN or infinite gradient is not masked: it poisons its weight and accumulator, as in
    torch's Adagrad (the engine stops such a run as diverged). Every hyper-parameter is a
    per-group setting and may be changed between tasks (the paper switches ``threshold``
    and ``decay`` when its second task starts); the accumulated ``s`` is kept.

    State: ``state[p]["eps_plus_sum"]`` holds :math:`\epsilon + s`, the accumulator with
    ``eps`` already added: it starts at ``eps`` (as Adagrad's starts at
    ``initial_accumulator_value``), so that no step spends a pass over the weights adding
    ``eps`` to the divisor. ``state[p]["eps_in_sum"]`` is the ``eps`` it includes; when a
    group's ``eps`` is edited, the next step shifts the accumulator by the difference,
    once. Subtract ``eps`` to read :math:`s`.

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
        foreach: ``None`` or ``True`` (the default): the flat multi-tensor path, the
            fast one on a CPU and on a GPU (docs/benchmarks.md times it against torch's
            fused Adagrad). ``False``: the single-tensor reference, one statement per
            line of the paper; the flat path gives its weights bit for bit without decay,
            and up to rounding with it.
        fused: ``True``: each tensor's update as one kernel that ``torch.compile``
            generates on the first step of each setting (seconds; equal to the flat path
            up to rounding). Off by default: a run of a few thousand steps does not win
            that start back.
        maximize: maximise the objective instead of minimising it.
        track_updates: keep, per weight, how many steps moved it (passed the mask with a
            non-zero gradient; ``state[p]["update_count"]``, float32, on the parameter's
            device). Counting never synchronises with the host; :meth:`update_counts`
            reads them.
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
        self._checked: dict[int, tuple] = {}  # id(group) -> its settings when last checked
        super().__init__(params, defaults)
        self._workspace = Workspace()

    @property
    def track_updates(self) -> bool:
        return bool(self.defaults.get("track_updates", False))

    def __setstate__(self, state):
        super().__setstate__(state)
        self._workspace, self._checked = Workspace(), {}

    def add_param_group(self, param_group: dict) -> None:
        """torch's, then the group's settings checked (a group may override the defaults)."""
        super().add_param_group(param_group)
        self._check_group(self.param_groups[-1])

    def _check_group(self, group: dict) -> None:
        """Raise ValueError for a bad setting. Also called by `step` when a group's settings
        changed since they were last checked (the paper switches them between tasks)."""
        settings = tuple(group[k] for k in _CHECKED_KEYS)
        if self._checked.get(id(group)) != settings:
            validate_hyperparameters(*settings)
            self._checked[id(group)] = settings

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
        self._checked.clear()
        for group in self.param_groups:
            self._check_group(group)
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
            self._check_group(group)  # only when edited since the last check
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

    def scratch_bytes(self) -> int:
        """Bytes of the flat path's scratch buffers, resident while the optimizer lives
        (not state: not in ``state_dict``), those that count updates left out."""
        return self._workspace.rule_bytes()


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
    workspace: Workspace | None = None,
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
        fused_classp(params, grads, sums, counts, **hyper)
    elif foreach:
        multi_tensor_classp(params, grads, sums, counts, workspace=workspace, **hyper)
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
            eps_plus_s.add_(torch.where(mask, powered_(g.abs(), power), 0))
            step = g / root_(eps_plus_s.clone(), power) if decay else g
        elif rule == "equation":
            mask = ~(g.abs() <= math.sqrt(threshold))  # per weight: g^2 > threshold; NaN passes
            step = g / eps_plus_s.sqrt() if decay else g  # past gradients only, square root
            eps_plus_s.add_(powered_(g.abs(), power))  # every gradient counts, masked or not
        else:  # "reference-code"
            # `(grad**2).any() > threshold`: a 0-d bool compared with a float. Kept as a
            # tensor (no `if`) so that nothing synchronises with the host.
            mask = (g * g).any() > threshold  # per tensor
            eps_plus_s.add_(torch.where(mask, g.abs(), 0))  # |g|, the power is discarded
            step = g / root_(eps_plus_s.clone(), power) if decay else g
        param.sub_(torch.where(mask, step, 0), alpha=lr)
        if counts is not None:  # the weights this step moved
            counts[i].add_(mask & (g != 0))
