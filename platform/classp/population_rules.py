"""The stacked rules of a population's optimizer steps (classp.population_steps): per
optimizer kind, whether an optimizer can step with others (`key`: the settings that shape
its arithmetic), the settings that may differ per member (`columns`), its state, and its
update over rows of the stacked weights and gradients, in the optimizer's own arithmetic
(torch's foreach Adam and AdaGrad, plain SGD, CLASSP's flat path), operation for
operation.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from classp.optim import CLASSP
from classp.optim_flat import accumulate_, divisor_into

# --------------------------------------------------------------------------------------
# Stacked rules: one per optimizer kind. `key` says whether an optimizer can step stacked
# and with whom (the settings that shape the arithmetic); `columns` are the settings that
# may differ per member.
# --------------------------------------------------------------------------------------


class Rule:
    state_keys: tuple[str, ...] = ()

    def key(self, optimizer) -> tuple | None:
        raise NotImplementedError

    def columns(self, group: dict, steps: int) -> tuple[float, ...]:
        """The member's settings for this step (its `steps`-th), as host floats: each
        becomes the weights' dtype once, as the optimizer's own scalars do."""
        raise NotImplementedError

    def init_state(self, like: Tensor, key: tuple, group: dict) -> dict[str, Tensor]:
        """The stacked state, shaped like W ([K, N])."""
        return {}

    def step(self, W: Tensor, G: Tensor, state: dict[str, Tensor], columns: Tensor, key: tuple,
             steps: int, groups: list[dict]) -> None:
        """One step of the rows of W (with gradients G and state rows `state`); `columns`
        holds their members' settings, `groups` their param groups as the host has them."""
        raise NotImplementedError


def _add_scaled(W: Tensor, X: Tensor, column: Tensor) -> None:
    """W += column * X, row by row, as `Tensor.add_(x, alpha=a)` computes it: one fused
    multiply-add per weight (torch's vectorised add). On a CPU, one add per member; on a
    GPU one kernel, whose compiler fuses the multiply-add the same way."""
    if W.device.type != "cpu":
        W.addcmul_(X, column)
        return
    for w, x, alpha in zip(W, X, column[:, 0].tolist()):
        w.add_(x, alpha=alpha)


def single_group(optimizer) -> dict | None:
    return optimizer.param_groups[0] if len(optimizer.param_groups) == 1 else None


def _all_have_gradients(group: dict) -> bool:
    """Adam moves a weight with a zero gradient (its moments): a parameter a run alone
    skips (no gradient) must be skipped, so such a group steps alone."""
    return all(p.grad is not None for p in group["params"])


class _SGD(Rule):
    """torch's SGD without momentum, weight decay or nesterov: w <- w - lr g."""

    def key(self, optimizer):
        group = single_group(optimizer)
        if type(optimizer) is not torch.optim.SGD or group is None:
            return None
        if group["momentum"] or group["weight_decay"] or group["nesterov"] or group["maximize"]:
            return None
        return ("sgd",)

    def columns(self, group, steps):
        return (-group["lr"],)

    def step(self, W, G, state, columns, key, steps, groups):
        _add_scaled(W, G, columns[:, 0:1])


class _Adam(Rule):
    """torch's Adam (its foreach path) with weight decay 0, no amsgrad, not maximising."""

    state_keys = ("exp_avg", "exp_avg_sq")

    def key(self, optimizer):
        group = single_group(optimizer)
        if type(optimizer) is not torch.optim.Adam or group is None:
            return None
        if group["weight_decay"] or group["amsgrad"] or group["maximize"] or group["capturable"] \
                or group["differentiable"] or group.get("fused") or group.get("decoupled_weight_decay"):
            return None
        if isinstance(group["lr"], Tensor) or not _all_have_gradients(group):
            return None
        beta1, beta2 = group["betas"]
        return ("adam", beta1, beta2, group["eps"])

    def columns(self, group, steps):
        beta1 = group["betas"][0]
        return ((group["lr"] / (1 - beta1 ** steps)) * -1,)  # the step size, as torch's

    def init_state(self, like, key, group):
        return {"exp_avg": torch.zeros_like(like), "exp_avg_sq": torch.zeros_like(like)}

    def step(self, W, G, state, columns, key, steps, groups):
        _, beta1, beta2, eps = key
        m, v = state["exp_avg"], state["exp_avg_sq"]
        m.lerp_(G, 1 - beta1)
        v.mul_(beta2).addcmul_(G, G, value=1 - beta2)
        bias_correction2_sqrt = (1 - beta2 ** steps) ** 0.5
        denom = v.sqrt().div_(bias_correction2_sqrt).add_(eps)
        W.add_((m * columns[:, 0:1]).div_(denom))  # as addcdiv: (value * m) / denom


class _AdaGrad(Rule):
    """torch's Adagrad (its foreach path) with lr_decay 0, weight decay 0, not maximising."""

    state_keys = ("sum",)

    def key(self, optimizer):
        group = single_group(optimizer)
        if type(optimizer) is not torch.optim.Adagrad or group is None:
            return None
        if group["lr_decay"] or group["weight_decay"] or group["maximize"] \
                or group.get("fused") or group["differentiable"]:
            return None
        return ("adagrad", group["eps"], group["initial_accumulator_value"])

    def columns(self, group, steps):
        return (-group["lr"],)

    def init_state(self, like, key, group):
        return {"sum": torch.full_like(like, key[2])}

    def step(self, W, G, state, columns, key, steps, groups):
        s = state["sum"]
        s.addcmul_(G, G, value=1)
        std = s.sqrt().add_(key[1])
        W.add_(G.mul(columns[:, 0:1]).div_(std))


class CLASSPRule(Rule):
    """CLASSP as its flat path computes it (classp.optim_flat), for two of its rules.
    Algorithm 1: h = g where g^2 > threshold, else 0; s += |h|^p; w moves by h, divided by
    (eps + s)^(1/p) with decay. The published code (reference-code, threshold below 1,
    where its per-tensor test always passes): h = g; s += |g| whatever the power; the same
    move. The rule, power, decay and whether eps is 0 shape the arithmetic; lr, threshold
    and eps are per member."""

    state_keys = ("eps_plus_sum", "update_count")

    def key(self, optimizer):
        group = single_group(optimizer)
        if type(optimizer) is not CLASSP or group is None:
            return None
        if group["rule"] not in ("algorithm", "reference-code") or group["fused"] \
                or group["maximize"] or group["foreach"] is False:
            return None
        if group["rule"] == "reference-code" and group["threshold"] >= 1.0:
            return None  # its test never passes: nothing moves, not even s (alone, as its own)
        # Other powers take pow, whose vectorised and scalar paths round differently: laid
        # out in rows, a weight's last bit would depend on where its row falls. Alone.
        if group["power"] not in (1.0, 2.0):
            return None
        return ("classp", group["power"], group["decay"], group["eps"] == 0,
                optimizer.track_updates, group["rule"])

    def columns(self, group, steps):
        # hardshrink's bound, as the flat path computes it (a double, then the weights' dtype)
        return (-group["lr"], math.sqrt(group["threshold"]))

    def init_state(self, like, key, group):
        # eps + s: each member's row starts at its own eps (StackedSteps fills it)
        state = {"eps_plus_sum": torch.zeros_like(like)}
        if key[4]:  # counting updates
            state["update_count"] = torch.zeros_like(like, dtype=torch.float32)
        return state

    def step(self, W, G, state, columns, key, steps, groups):
        _, power, decay, _, _, rule = key
        neg_lr, bound = columns[:, 0:1], columns[:, 1:2]
        s, count = state["eps_plus_sum"], state.get("update_count")
        masked = rule == "algorithm" and any(group["threshold"] > 0 for group in groups)
        if masked:  # thresholds read on the host: no sync
            # hardshrink: 0 where |g| <= sqrt(threshold); a NaN passes
            h = torch.where(G.abs() <= bound, 0.0, G)
        else:  # no mask: h is g, as on the flat path
            h = G
        if not decay:
            _add_scaled(W, h, neg_lr)
        # s += |h|^p, counting the weights that moved; the published code adds |g|
        accumulate_(s, h.abs(), power if rule == "algorithm" else 1.0, count)
        if decay:
            # The members share whether eps is 0 (the key), which is all the guard reads.
            divisor = divisor_into(s, min(group["eps"] for group in groups), power)
            W.add_(torch.mul(h, neg_lr).div_(divisor))  # as addcdiv: (value * h) / divisor


RULES: tuple[Rule, ...] = (_SGD(), _Adam(), _AdaGrad(), CLASSPRule())


def rule_for(optimizer) -> tuple[Rule | None, tuple | None]:
    for rule in RULES:
        key = rule.key(optimizer)
        if key is not None:
            return rule, key
    return None, None
