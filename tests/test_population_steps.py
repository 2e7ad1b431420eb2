"""Stacked optimizer steps (classp.population_steps): members stepped together get, bit for
bit on a CPU, the weights and state their optimizers give them one by one, whatever their
settings, when a schedule edits them, when a member leaves, and when a parameter has no
gradient (another task's head)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from classp.optim import CLASSP
from classp.population_steps import FlatStack, StackedSteps


def _model() -> nn.Module:
    return nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 3))


OPTIMIZERS = {
    "sgd": [lambda ps: torch.optim.SGD(ps, lr=0.1), lambda ps: torch.optim.SGD(ps, lr=0.03),
            lambda ps: torch.optim.SGD(ps, lr=0.2, momentum=0.9)],  # momentum: steps alone
    "adam": [lambda ps: torch.optim.Adam(ps, lr=1e-2, foreach=True),
             lambda ps: torch.optim.Adam(ps, lr=3e-3, foreach=True),
             lambda ps: torch.optim.Adam(ps, lr=1e-3, foreach=True, amsgrad=True)],
    "adagrad": [lambda ps: torch.optim.Adagrad(ps, lr=0.1, foreach=True),
                lambda ps: torch.optim.Adagrad(ps, lr=0.02, foreach=True),
                lambda ps: torch.optim.Adagrad(ps, lr=0.05, foreach=True)],
    "classp": [lambda ps: CLASSP(ps, lr=0.05, eps=1e-3, track_updates=True),
               lambda ps: CLASSP(ps, lr=0.02, eps=1e-3, threshold=1e-4, power=2.0, track_updates=True),
               lambda ps: CLASSP(ps, lr=0.03, eps=0.0, threshold=1e-5, decay=False, track_updates=True),
               lambda ps: CLASSP(ps, lr=0.05, rule="reference-code", threshold=0.5, eps=1e-5,
                                 track_updates=True),  # the paper protocol's
               lambda ps: CLASSP(ps, lr=0.02, rule="reference-code", power=2.0, track_updates=True),
               lambda ps: CLASSP(ps, lr=0.03, rule="reference-code", decay=False, track_updates=True),
               lambda ps: CLASSP(ps, lr=0.03, rule="reference-code", eps=0.0, track_updates=True),
               lambda ps: CLASSP(ps, lr=0.05, rule="reference-code", threshold=1.0),  # alone: still
               lambda ps: CLASSP(ps, lr=0.05, rule="equation", track_updates=True),  # alone
               lambda ps: CLASSP(ps, lr=0.01, eps=0.0, power=2.0, track_updates=True),  # 0/0 guard
               lambda ps: CLASSP(ps, lr=0.01, power=3.0, track_updates=True)],  # alone: pow
}


class Pair:
    """The same members twice: one optimizer each, and stacked."""

    def __init__(self, makers, seed=0):
        torch.manual_seed(seed)
        self.alone = [_model() for _ in makers]
        self.together = [copy.deepcopy(m) for m in self.alone]
        self.opt_alone = [make(list(m.parameters())) for make, m in zip(makers, self.alone)]
        self.opt_together = [make(list(m.parameters())) for make, m in zip(makers, self.together)]
        self.stack = FlatStack([list(m.named_parameters()) for m in self.together])
        self.steps = StackedSteps(self.stack, self.opt_together)

    def step(self, active, idle=frozenset()):
        """The same random gradients for both (none for the `idle` parameters)."""
        self.stack.attach(idle)
        self.steps.regroup()  # as a population does at each task's start
        self.stack.zero_grad()
        for k in active:
            for (name, p), q in zip(self.alone[k].named_parameters(), self.together[k].parameters()):
                g = None if name in idle else torch.randn_like(p) * 0.05
                p.grad = g
                if g is not None:
                    q.grad.add_(g)
            self.opt_alone[k].step()
        self.steps.step(active, lambda k: None)

    def assert_same(self):
        for k, (a, b) in enumerate(zip(self.alone, self.together)):
            for p, q in zip(a.parameters(), b.parameters()):
                assert torch.equal(p, q), k
                for name, value in self.opt_alone[k].state[p].items():
                    if isinstance(value, torch.Tensor) and value.dim():
                        assert torch.equal(value, self.opt_together[k].state[q][name]), (k, name)


@pytest.mark.parametrize("kind", sorted(OPTIMIZERS))
def test_stacked_steps_are_each_optimizers_own_bit_for_bit(kind):
    pair = Pair(OPTIMIZERS[kind])
    everyone = list(range(len(pair.alone)))
    for _ in range(20):
        pair.step(everyone)
    pair.assert_same()
    # A member leaves (diverged, pruned): the others step on, it no more.
    left = pair.together[0].state_dict()
    for _ in range(5):
        pair.step(everyone[1:])
    pair.assert_same()
    assert all(torch.equal(v, pair.together[0].state_dict()[k]) for k, v in left.items())


def test_a_schedule_editing_settings_between_steps_is_followed():
    pair = Pair(OPTIMIZERS["classp"][:4])  # Algorithm 1 three ways, and the published code
    for step in range(30):
        if step == 10:  # the paper's second phase: threshold 0, the decay on; and a new eps
            for opt in pair.opt_alone + pair.opt_together:
                opt.param_groups[0].update(threshold=0.0, decay=True, eps=1e-4)
        if step == 20:
            for opt in pair.opt_alone[1:] + pair.opt_together[1:]:
                opt.param_groups[0]["lr"] = 0.01
        pair.step([0, 1, 2, 3])
    pair.assert_same()


@pytest.mark.parametrize("kind", ["adam", "classp", "adagrad"])
def test_a_parameter_without_gradient_is_left_alone_as_its_optimizer_does(kind):
    # For CLASSP also a member with eps = 0, whose idle weights' accumulator stays 0: the
    # stacked rule must not divide 0 by 0 there.
    makers = OPTIMIZERS[kind][:2] if kind != "classp" else OPTIMIZERS[kind][:2] + OPTIMIZERS[kind][4:]
    pair = Pair(makers)
    idle = {"2.weight", "2.bias"}  # as another task's head
    everyone = list(range(len(makers)))
    for _ in range(5):
        pair.step(everyone, idle)
    for _ in range(5):
        pair.step(everyone)
    pair.assert_same()


def test_each_members_state_is_a_view_of_the_stack():
    pair = Pair(OPTIMIZERS["adam"][:2])
    pair.step([0, 1])
    state = pair.opt_together[1].state[next(pair.together[1].parameters())]
    assert state["exp_avg"].data_ptr() != state["exp_avg_sq"].data_ptr()
    assert state["exp_avg"].untyped_storage().data_ptr() == \
        pair.steps.state["adam"]["exp_avg"].untyped_storage().data_ptr()


def test_only_the_settings_no_stacked_rule_follows_step_alone():
    # The published code's rule (the paper protocol's) steps with the others; equation (1),
    # the published rule at threshold 1 (its test never passes) and power 3 step alone.
    pair = Pair(OPTIMIZERS["classp"])
    pair.step(list(range(len(pair.alone))))
    groups = [pair.opt_together[k].param_groups[0] for k in sorted(pair.steps.alone)]
    assert [(g["rule"], g["threshold"], g["power"]) for g in groups] == [
        ("reference-code", 1.0, 1.0), ("equation", 0.0, 1.0), ("algorithm", 0.0, 3.0)]
