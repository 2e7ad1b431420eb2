"""The methods' own behaviour: CLASSP keeps state, EWC anchors, SI accumulates, memory is measured."""

from __future__ import annotations

import copy
import re

import pytest
import torch
from torch.nn import functional as F

from classp.data import load_sequence
from classp.engine import RunConfig, run
from classp.errors import UserError
from classp.methods import build_method
from classp.methods.ewc import EWC
from classp.scenarios import ActiveOutputs


class Recorder:
    """An observer that keeps what it is told at the end of each task."""

    def __init__(self, grab):
        self.grab, self.seen = grab, []

    def on_run_start(self, *a):
        pass

    def on_step(self, event):
        pass

    def on_task_end(self, event):
        self.seen.append(self.grab(event))

    def on_run_end(self, result):
        pass


@pytest.fixture(scope="module")
def digits():
    return load_sequence("split-digits")


def _config(method, **params):
    return RunConfig(sequence="split-digits", method=method, method_params=params, epochs=1)


def test_classp_state_is_not_reset_between_tasks(digits):
    def grab(event):
        p = next(iter(event.model.parameters()))
        state = event.optimizer.state[p]
        return state["eps_plus_sum"], state["eps_plus_sum"].clone(), dict(event.optimizer.param_groups[0])

    rec = Recorder(grab)
    run(_config("classp", lr=0.05, threshold=1e-6, schedule="paper"), [rec], sequence=digits)
    (t1, v1, g1), (t2, v2, g2) = rec.seen[0], rec.seen[1]
    assert t1 is t2  # the same accumulator tensor, never re-created
    assert (v2 >= v1).all() and (v2 > v1).any()  # it kept growing
    assert (g1["threshold"], g1["decay"]) == (1e-6, False)  # the paper's first phase
    assert (g2["threshold"], g2["decay"]) == (0.0, True)  # and its second


def test_classp_constant_schedule_keeps_its_settings(digits):
    rec = Recorder(lambda event: dict(event.optimizer.param_groups[0]))
    run(_config("classp", lr=0.05, threshold=0.3, decay=False, schedule="constant"), [rec],
        sequence=digits)
    assert {(g["threshold"], g["decay"]) for g in rec.seen} == {(0.3, False)}
    assert len(rec.seen) == len(digits.tasks)


def _tiny_model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))


def test_ewc_penalty_is_zero_at_its_anchor_and_grows_away_from_it(digits):
    model = _tiny_model()
    ewc = EWC(ewc_lambda=10.0)
    task = digits.tasks[0]
    ewc.end_task(0, model, task.train.x, task.train.y)
    assert ewc.penalty(model).item() == 0.0
    penalties = []
    for scale in (0.01, 0.1, 1.0):
        moved = _tiny_model()
        with torch.no_grad():
            for p in moved.parameters():
                p.add_(scale)
        penalties.append(ewc.penalty(moved).item())
    assert 0 < penalties[0] < penalties[1] < penalties[2]


class EWCWatcher:
    """Looks at the engine's own EWC object (handed to observers at the run's start): at
    each task's end, its anchors and the model as they are at that moment."""

    def __init__(self):
        self.ewc, self.seen = None, []

    def on_run_start(self, config, sequence, model, method):
        self.ewc = method

    def on_step(self, event):
        pass

    def on_task_end(self, event):
        self.seen.append({
            "weights": [p.detach().clone() for p in event.model.parameters()],
            "anchors": [([f.clone() for f in fisher], [s.clone() for s in star])
                        for fisher, star in self.ewc.anchors],
            "model": copy.deepcopy(event.model)})

    def on_run_end(self, result):
        pass


def _independent_sample_fisher(model, x, y):
    """Mean over samples of each sample's squared gradient, one sample at a time, in eval
    mode: written from the definition, sharing no code with classp.methods.ewc. Split
    digits is class-incremental: as at its task's end, the outputs of classes not seen yet
    are masked (the copy was taken after evaluation, which reads every output)."""
    model = copy.deepcopy(model).eval()
    for module in model.modules():
        if isinstance(module, ActiveOutputs):
            module.masked = True
    params = list(model.parameters())
    total = [torch.zeros_like(p) for p in params]
    for i in range(len(y)):
        grads = torch.autograd.grad(F.cross_entropy(model(x[i:i + 1]), y[i:i + 1]), params)
        for t, g in zip(total, grads):
            t.add_(g * g)
    return [t / len(y) for t in total]


def test_the_engine_s_ewc_anchors_each_task_at_its_end_with_its_fisher(digits):
    watcher = EWCWatcher()
    result = run(_config("ewc", lr=0.05, ewc_lambda=1.0, fisher_samples=48), [watcher],
                 sequence=digits)
    assert result.status == "finished"
    for k, seen in enumerate(watcher.seen):
        assert len(seen["anchors"]) == k + 1  # separate mode: one (F, w*) per task so far
        fisher, star = seen["anchors"][k]
        for s, w in zip(star, seen["weights"]):
            assert torch.equal(s, w)  # w* is the model at the end of its task
        task = digits.tasks[k].train
        expected = _independent_sample_fisher(seen["model"], task.x[:48], task.y[:48])
        for f, e in zip(fisher, expected):
            torch.testing.assert_close(f, e, rtol=1e-4, atol=1e-8)


def test_online_ewc_keeps_one_fisher_decayed_by_gamma(digits):
    watcher = EWCWatcher()
    run(_config("ewc", lr=0.05, ewc_lambda=1.0, fisher_samples=48, mode="online", gamma=0.5),
        [watcher], sequence=digits)
    previous = None
    for k, seen in enumerate(watcher.seen):
        (fisher, star), = seen["anchors"]  # one anchor, whatever the task
        task = digits.tasks[k].train
        new = _independent_sample_fisher(seen["model"], task.x[:48], task.y[:48])
        expected = new if previous is None else [0.5 * p + n for p, n in zip(previous, new)]
        for f, e in zip(fisher, expected):
            torch.testing.assert_close(f, e, rtol=1e-4, atol=1e-8)
        for s, w in zip(star, seen["weights"]):
            assert torch.equal(s, w)  # the latest weights
        previous = fisher


def test_ewc_penalty_is_half_lambda_fisher_weighted_squared_distance():
    model = torch.nn.Linear(2, 1)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, 2.0]]))
        model.bias.fill_(0.5)
    ewc = EWC(ewc_lambda=4.0)
    ewc.anchors = [([torch.tensor([[0.1, 0.2]]), torch.tensor([0.3])],
                    [torch.tensor([[0.0, 0.0]]), torch.tensor([1.5])]),
                   ([torch.tensor([[1.0, 0.0]]), torch.tensor([0.0])],
                    [torch.tensor([[2.0, 0.0]]), torch.tensor([0.0])])]
    by_hand = 0.5 * 4.0 * ((0.1 * 1 + 0.2 * 4 + 0.3 * 1) + (1.0 * 1))
    assert ewc.penalty(model).item() == pytest.approx(by_hand)


def test_ewc_batch_fisher_is_the_mean_squared_batch_gradient(digits):
    model = _tiny_model()
    x, y = digits.tasks[0].train.x[:64], digits.tasks[0].train.y[:64]
    ewc = EWC(fisher="batch", fisher_batch=32, fisher_samples=64)
    ewc.end_task(0, model, x, y)
    grads = [torch.autograd.grad(F.cross_entropy(model(x[s:s + 32]), y[s:s + 32]),
                                 list(model.parameters())) for s in (0, 32)]
    for k, f in enumerate(ewc.anchors[0][0]):
        torch.testing.assert_close(f, (grads[0][k] ** 2 + grads[1][k] ** 2) / 2)


@pytest.mark.parametrize("mode, per_weight", [("separate", 2 * 5), ("online", 2)])
def test_ewc_memory_is_two_floats_per_weight_per_task_or_two_online(digits, mode, per_weight):
    result = run(_config("ewc", mode=mode, fisher_samples=32), sequence=digits)
    assert result.state_bytes == 4 * per_weight * result.num_parameters


def test_classp_keeps_one_float_per_weight_and_two_of_scratch_and_adam_two(digits):
    classp = run(_config("classp", lr=0.05), sequence=digits)
    assert classp.state_bytes == 4 * (1 + 2) * classp.num_parameters
    adam = run(_config("adam"), sequence=digits)
    assert adam.state_bytes == 8 * adam.num_parameters


def test_si_importance_accumulates_over_tasks(digits):
    si = build_method("si", {"lr": 0.05, "c": 0.5})
    model = _tiny_model()
    opt = si.optimizer(list(model.parameters()))
    snapshots = []
    for k in range(2):
        si.begin_task(k, model, opt)
        task = digits.tasks[k]
        for s in range(0, len(task.train), 32):
            loss = F.cross_entropy(model(task.train.x[s:s + 32]), task.train.y[s:s + 32])
            penalty = si.penalty(model)
            opt.zero_grad()
            (loss if penalty is None else loss + penalty).backward()
            opt.step()
            si.after_step(model)
        si.end_task(k, model, task.train.x, task.train.y)
        snapshots.append([o.clone() for o in si.omega])
    first, second = snapshots
    assert any((o > 0).any() for o in first)
    assert all((b >= a).all() for a, b in zip(first, second))
    assert any((b > a).any() for a, b in zip(first, second))
    assert si.penalty(model).item() == 0.0  # at the new anchor


def test_joint_training_on_the_final_union_trains_only_at_the_last_task(digits):
    result = run(_config("joint", lr=0.1, union="final"), sequence=digits)
    every = sum(len(t.train) for t in digits.tasks)
    assert result.steps == -(-every // 32)  # the last task's one epoch over all the data
    assert result.accuracy["test"][1] == result.accuracy["test"][0]  # untrained until then
    assert result.metrics["test"]["acc"] > 0.8


def test_joint_training_sees_every_task_so_far(digits):
    result = run(_config("joint", lr=0.1), sequence=digits)
    sgd = run(_config("sgd", lr=0.1), sequence=digits)
    assert result.metrics["test"]["acc"] > sgd.metrics["test"]["acc"] + 0.3


@pytest.mark.parametrize("name, params, message", [
    ("sgd", {"threshold": 0.5}, "method 'sgd' has no parameter 'threshold'"),
    ("classp", {"schedule": "weekly"},
     "method 'classp': unknown schedule 'weekly'; choose one of: paper, published, constant"),
    ("classp", {"power": 0}, "power must be a positive number, got 0"),
    ("ewc", {"fisher": "fishy"},
     "method 'ewc': unknown fisher 'fishy'; choose one of: sample, exact, predicted, batch"),
    ("ewc", {"fisher_samples": 0}, "fisher_samples must be >= 1, got 0"),
    ("si", {"xi": 0.0}, "xi must be a positive number, got 0.0"),
    ("l2", {"optimizer": "lbfgs"}, "method 'l2': unknown optimizer 'lbfgs'"),
    ("mas", {"estimate": "guess"}, "method 'mas': unknown estimate 'guess'"),
    ("mas", {"mas_lambda": -1}, "mas_lambda must be >= 0"),
    ("sgd", {"lr": -1}, "lr must be a positive number"),
])
def test_bad_method_parameters_are_clear_errors(name, params, message):
    with pytest.raises(UserError, match=re.escape(message)):
        build_method(name, params)
