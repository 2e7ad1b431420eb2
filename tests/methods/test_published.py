"""The published scripts' procedures: CLASSP's switch step and the published EWC variants,
checked against hand computations."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

from classp.engine import RunConfig, run
from classp.methods import build_method
from classp.methods.base import TaskPlan
from classp.methods.ewc import fresh_copy, train_anchor


class Steps:
    """Every step's optimizer settings and the method, through the engine's events."""

    def __init__(self):
        self.phases, self.method, self.penalty_active = [], None, []

    def on_run_start(self, config, sequence, model, method):
        self.method = method
        if hasattr(method, "opt"):  # the settings each step runs with, read as it starts
            method.opt.register_step_pre_hook(self._record)

    def _record(self, optimizer, args, kwargs):
        g = optimizer.param_groups[0]
        self.phases.append((g["threshold"], g["decay"]))

    def on_step(self, event):
        if hasattr(self.method, "anchors"):
            self.penalty_active.append((event.step, self.method.penalty(event.model) is not None))

    def on_task_end(self, event):
        pass

    def on_run_end(self, result):
        self.result = result


def _paper_run(vision_data_dir, method, params, subsample=1.0):
    steps = Steps()
    config = RunConfig(sequence="mnist-fmnist", protocol="paper", method=method,
                       method_params=params, data_dir=str(vision_data_dir), log_every=1,
                       subsample=subsample, eval_splits=("test",))
    result = run(config, [steps])
    return steps, result


def test_classp_switches_at_the_step_the_script_counts(vision_data_dir):
    # 200 training images per task, batch 32: 7 steps per epoch (the last of 8 images),
    # 4 + 1 epochs = 35 steps. The script: phase one while step < 4 * 200 / 32 = 25.
    steps, result = _paper_run(vision_data_dir, "classp", {
        "lr": 0.05, "threshold": 0.5, "schedule": "published", "rule": "reference-code"})
    assert result.steps == len(steps.phases) == 35
    assert steps.phases == [(0.5, False)] * 24 + [(0.0, True)] * 11


def test_the_switch_follows_a_subsample_mid_epoch(vision_data_dir):
    # Half the data: 100 images, 4 steps per epoch; the script's 4 * 100 / 32 = 12.5 puts
    # the switch at step 13, inside the last MNIST epoch (steps 13 to 16).
    steps, result = _paper_run(vision_data_dir, "classp", {
        "lr": 0.05, "threshold": 0.5, "schedule": "published"}, subsample=0.5)
    assert result.steps == 4 * 4 + 4  # the ratio of steps between the tasks stays 4:1
    assert steps.phases == [(0.5, False)] * 12 + [(0.0, True)] * 8


def test_the_paper_schedule_switches_at_the_task_boundary(vision_data_dir):
    steps, _ = _paper_run(vision_data_dir, "classp", {"lr": 0.05, "threshold": 0.5, "schedule": "paper"})
    assert steps.phases == [(0.5, False)] * 28 + [(0.0, True)] * 7


def test_published_vision_ewc_penalises_from_the_first_step_after_epoch_one(vision_data_dir):
    steps, result = _paper_run(vision_data_dir, "ewc", {
        "lr": 0.01, "ewc_lambda": 5.0, "variant": "published-vision"})
    assert result.status == "finished"
    # after step s the method says whether step s + 1 is penalised: from step 8 on
    assert [s + 1 for s, active in steps.penalty_active if active and s < 35] == list(range(8, 36))
    assert len(steps.penalty_active) == 35


def _linear_task(seed=0, n=10, batch=4):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 5, generator=gen)
    y = torch.randint(0, 3, (n,), generator=gen)
    return TaskPlan(x, y, epochs=4, batch_size=batch)


def test_the_separate_anchor_model_against_a_hand_computation():
    task = _linear_task()
    torch.manual_seed(3)
    model = torch.nn.Linear(5, 3)
    anchor = fresh_copy(model)
    assert not torch.equal(anchor.weight, model.weight)  # a fresh initialisation
    W, b = anchor.weight.detach().clone(), anchor.bias.detach().clone()
    fisher_w, fisher_b = torch.zeros_like(W), torch.zeros_like(b)
    lr, seed = 0.3, 7
    order = torch.randperm(10, generator=torch.Generator().manual_seed(seed))
    for start in range(0, 10, 4):  # batches of 4, 4 and 2
        idx = order[start:start + 4]
        W_, b_ = W.clone().requires_grad_(), b.clone().requires_grad_()
        loss = F.cross_entropy(task.train_x[idx] @ W_.T + b_, task.train_y[idx])
        gW, gb = torch.autograd.grad(loss, (W_, b_))
        fisher_w += gW ** 2
        fisher_b += gb ** 2
        W, b = W - lr * gW, b - lr * gb
    fisher, star = train_anchor(anchor, task, lr, seed)
    assert torch.allclose(fisher[0], fisher_w / 10, atol=1e-7)  # divided by samples, not batches
    assert torch.allclose(fisher[1], fisher_b / 10, atol=1e-7)
    assert torch.allclose(star[0], W, atol=1e-6) and torch.allclose(star[1], b, atol=1e-6)


def test_published_penalty_has_no_half_and_waits_for_its_step():
    model = torch.nn.Linear(2, 1)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, -2.0]]))
        model.bias.fill_(0.5)
    fisher = [torch.tensor([[0.1, 0.2]]), torch.tensor([0.3])]
    star = [torch.tensor([[0.0, 0.0]]), torch.tensor([1.5])]
    hand = 5000 * (0.1 * 1 + 0.2 * 4 + 0.3 * 1)  # lambda * sum F (w - w*)^2
    for variant, factor in (("published-vision", 1.0), ("published-text", 1.0), ("textbook", 0.5)):
        ewc = build_method("ewc", {"ewc_lambda": 5000.0, "variant": variant})
        ewc.anchors = [(fisher, star)]
        assert ewc.penalty(model).item() == pytest.approx(factor * hand)
    ewc = build_method("ewc", {"ewc_lambda": 5000.0, "variant": "published-vision"})
    ewc.anchors, ewc.penalty_from_step = [(fisher, star)], 4
    seen = []
    for _ in range(5):
        seen.append(ewc.penalty(model) is not None)
        ewc.step_done()
    assert seen == [False, False, False, True, True]  # steps 1-3 free, from step 4 on


def test_published_text_ewc_anchors_at_the_end_of_the_first_task_only():
    task = _linear_task(n=12, batch=4)
    model = torch.nn.Linear(5, 3)
    ewc = build_method("ewc", {"ewc_lambda": 1.0, "variant": "published-text"})
    from classp.methods.base import RunPlan

    ewc.start_run(RunPlan((task, task), seed=0))
    ewc.end_task(0, model, task.train_x, task.train_y)
    (fisher, star), = ewc.anchors
    hand = [torch.zeros_like(p) for p in model.parameters()]
    for start in range(0, 12, 4):  # in file order, mean over the 3 batches
        loss = F.cross_entropy(model(task.train_x[start:start + 4]), task.train_y[start:start + 4])
        for h, g in zip(hand, torch.autograd.grad(loss, list(model.parameters()))):
            h += g ** 2 / 3
    assert all(torch.allclose(f, h, atol=1e-7) for f, h in zip(fisher, hand))
    assert all(torch.equal(s, p) for s, p in zip(star, model.parameters()))
    with torch.no_grad():
        model.weight.add_(1.0)
    ewc.end_task(1, model, task.train_x, task.train_y)
    assert ewc.anchors[0][1][0] is star[0]  # the second task adds no anchor
    assert not math.isnan(ewc.penalty(model).item())
