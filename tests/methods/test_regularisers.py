"""L2, MAS, EWC's exact and predicted Fishers and SI's path integral, each against a hand
computation on a tiny model."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from classp.methods import build_method
from classp.methods.ewc import EWC
from classp.methods.l2 import L2
from classp.methods.mas import MAS


def _linear(weight, bias) -> torch.nn.Linear:
    model = torch.nn.Linear(len(weight[0]), len(weight))
    with torch.no_grad():
        model.weight.copy_(torch.tensor(weight))
        model.bias.copy_(torch.tensor(bias))
    return model


def test_l2_penalty_is_half_lambda_squared_distance_to_the_latest_task_end():
    model = _linear([[1.0, 2.0]], [0.5])
    l2 = L2(l2_lambda=4.0)
    assert l2.penalty(model) is None  # nothing to keep before the first task ends
    l2.end_task(0, model, None, None)
    assert l2.penalty(model).item() == 0.0
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[0.0, 4.0]]))
        model.bias.fill_(1.5)
    by_hand = 0.5 * 4.0 * ((1.0 - 0.0) ** 2 + (2.0 - 4.0) ** 2 + (0.5 - 1.5) ** 2)
    assert l2.penalty(model).item() == pytest.approx(by_hand)
    l2.end_task(1, model, None, None)  # one anchor: the latest weights
    assert l2.penalty(model).item() == 0.0
    assert len(l2.own_tensors()) == 2  # one float per weight


def _mas_by_hand(model, x):
    """mean over samples of |d ||W x + b||^2 / d(W, b)| = |2 f(x) x^T|, |2 f(x)|."""
    W, b = model.weight.detach(), model.bias.detach()
    gw, gb = torch.zeros_like(W), torch.zeros_like(b)
    for xi in x:
        f = W @ xi + b
        gw += (2 * f.unsqueeze(1) * xi.unsqueeze(0)).abs()
        gb += (2 * f).abs()
    return gw / len(x), gb / len(x)


def test_mas_importance_is_the_mean_absolute_gradient_of_the_squared_output_norm():
    torch.manual_seed(0)
    model = _linear([[0.5, -1.0, 0.2], [1.5, 0.3, -0.7]], [0.1, -0.2])
    x = torch.randn(7, 3)
    mas = MAS(mas_lambda=3.0, importance_samples=7)
    mas.end_task(0, model, x, None)
    by_hand = _mas_by_hand(model, x)
    for got, want in zip(mas.omega, by_hand):
        torch.testing.assert_close(got, want)
    # importances add up over tasks; the anchor is the latest weights
    x2 = torch.randn(5, 3)
    with torch.no_grad():
        model.weight.add_(0.25)
    mas.importance_samples = 5
    mas.params["importance_samples"] = 5
    mas.end_task(1, model, x2, None)
    second = _mas_by_hand(model, x2)
    for got, a, b in zip(mas.omega, by_hand, second):
        torch.testing.assert_close(got, a + b)
    with torch.no_grad():
        model.weight.add_(1.0)
    penalty = 0.5 * 3.0 * (mas.omega[0] * 1.0).sum()  # every weight 1 away, the bias 0
    torch.testing.assert_close(mas.penalty(model), penalty)


def test_mas_batch_estimate_is_hsu_s_mean_absolute_batch_gradient():
    torch.manual_seed(1)
    model = _linear([[0.5, -1.0], [1.5, 0.3]], [0.1, -0.2])
    x = torch.randn(6, 2)
    mas = MAS(estimate="batch", importance_batch=3, importance_samples=6)
    mas.end_task(0, model, x, None)
    by_hand = [torch.zeros_like(model.weight), torch.zeros_like(model.bias)]
    for s in (0, 3):
        grads = torch.autograd.grad(model(x[s:s + 3]).pow(2).mean(), list(model.parameters()))
        for t, g in zip(by_hand, grads):
            t += g.abs() / 2
    for got, want in zip(mas.omega, by_hand):
        torch.testing.assert_close(got, want)


def _per_sample_grads(model, x, y):
    return [torch.autograd.grad(F.cross_entropy(model(x[i:i + 1]), y[i:i + 1]),
                                list(model.parameters())) for i in range(len(x))]


def test_ewc_exact_fisher_is_the_expectation_over_the_model_s_own_predictions():
    torch.manual_seed(2)
    model = _linear([[0.5, -1.0, 0.2], [1.5, 0.3, -0.7], [0.0, 0.4, 0.9]], [0.1, -0.2, 0.0])
    x = torch.randn(5, 3)
    ewc = EWC(fisher="exact", fisher_samples=5)
    ewc.end_task(0, model, x, torch.zeros(5, dtype=torch.long))
    by_hand = [torch.zeros_like(p) for p in model.parameters()]
    probs = F.softmax(model(x), 1).detach()
    for c in range(3):
        grads = _per_sample_grads(model, x, torch.full((5,), c))
        for i in range(5):
            for t, g in zip(by_hand, grads[i]):
                t += probs[i, c] * g ** 2 / 5
    for got, want in zip(ewc.anchors[0][0], by_hand):
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize("kind", ["sample", "predicted"])
def test_ewc_empirical_and_predicted_fishers_square_the_gradient_at_their_label(kind):
    torch.manual_seed(3)
    model = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.ReLU(), torch.nn.Linear(6, 3))
    x, y = torch.randn(9, 4), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2])
    ewc = EWC(fisher=kind, fisher_samples=9)
    ewc.end_task(0, model, x, y)
    labels = y if kind == "sample" else model(x).argmax(1)
    assert kind == "sample" or not torch.equal(labels, y)  # the two differ on this data
    by_hand = [torch.zeros_like(p) for p in model.parameters()]
    for grads in _per_sample_grads(model, x, labels):
        for t, g in zip(by_hand, grads):
            t += g ** 2 / 9
    for got, want in zip(ewc.anchors[0][0], by_hand):
        torch.testing.assert_close(got, want)


def test_si_integrates_the_task_loss_gradient_not_the_penalty_s():
    torch.manual_seed(4)
    model = torch.nn.Linear(3, 2)
    si = build_method("si", {"lr": 0.1, "c": 2.0})
    opt = si.optimizer(list(model.parameters()))
    x, y = torch.randn(8, 3), torch.randint(0, 2, (8,))
    si.begin_task(0, model, opt)
    for _ in range(3):  # a first task, so that the penalty is on in the second
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
        si.after_step(model)
    si.end_task(0, model, x, y)
    si.begin_task(1, model, opt)
    x2, y2 = torch.randn(8, 3), torch.randint(0, 2, (8,))
    with torch.no_grad():  # move away from the anchor so that the penalty pulls
        for p in model.parameters():
            p.add_(0.3)
    si.previous = [p.detach().clone() for p in model.parameters()]
    before = [p.detach().clone() for p in model.parameters()]
    task_grads = torch.autograd.grad(F.cross_entropy(model(x2), y2), list(model.parameters()))
    opt.zero_grad()
    (F.cross_entropy(model(x2), y2) + si.penalty(model)).backward()
    opt.step()
    si.after_step(model)
    for path, g, b, p in zip(si.path, task_grads, before, model.parameters()):
        torch.testing.assert_close(path, -g * (p.detach() - b))


@pytest.mark.parametrize("name", ["ewc", "si", "l2", "mas", "joint"])
def test_regularisers_step_with_the_optimizer_they_are_given(name):
    params = [torch.nn.Parameter(torch.zeros(2))]
    assert isinstance(build_method(name, {}).optimizer(params), torch.optim.SGD)
    adam = build_method(name, {"optimizer": "adam", "lr": 1e-3}).optimizer(params)
    assert isinstance(adam, torch.optim.Adam) and adam.param_groups[0]["lr"] == 1e-3
    assert isinstance(build_method(name, {"optimizer": "adagrad"}).optimizer(params),
                      torch.optim.Adagrad)


@pytest.mark.parametrize("name, floats_per_weight", [("l2", 1), ("mas", 2)])
def test_l2_and_mas_report_the_state_they_keep(name, floats_per_weight):
    from classp.engine import RunConfig, run

    result = run(RunConfig(sequence="split-digits", method=name, epochs=1, scenario="domain",
                           method_params={"lr": 0.05}))
    # plain SGD keeps nothing; L2 the anchor, MAS the anchor and the importance
    assert result.status == "finished"
    assert result.state_bytes == 4 * floats_per_weight * result.num_parameters


def test_models_beyond_linear_layers_take_per_sample_gradients_by_torch_func():
    """The closed form holds for linear layers only; a convolution takes the vmap path,
    and both agree with the one-sample-at-a-time definition."""
    from classp.methods.ewc import _exact_fisher, _sample_fisher
    from classp.methods.mas import sample_importance
    from classp.methods.per_sample import linear_layers

    torch.manual_seed(5)
    conv = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                               torch.nn.Linear(2 * 4 * 4, 3))
    mlp = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(36, 5), torch.nn.ReLU(),
                              torch.nn.Linear(5, 3))
    x, y = torch.randn(6, 1, 6, 6), torch.tensor([0, 1, 2, 0, 1, 2])
    assert linear_layers(conv) is None and linear_layers(mlp) is not None
    for model in (conv, mlp):
        params = list(model.parameters())
        empirical = [torch.zeros_like(p) for p in params]
        exact = [torch.zeros_like(p) for p in params]
        mas = [torch.zeros_like(p) for p in params]
        for i in range(6):
            out = model(x[i:i + 1])
            for t, g in zip(empirical, torch.autograd.grad(F.cross_entropy(out, y[i:i + 1]), params)):
                t += g ** 2 / 6
            probs = F.softmax(out, 1).detach()[0]
            for c in range(3):
                grads = torch.autograd.grad(F.log_softmax(model(x[i:i + 1]), 1)[0, c], params)
                for t, g in zip(exact, grads):
                    t += probs[c] * g ** 2 / 6
            for t, g in zip(mas, torch.autograd.grad(model(x[i:i + 1]).pow(2).sum(), params)):
                t += g.abs() / 6
        for got, want in ((_sample_fisher(model, x, y), empirical), (_exact_fisher(model, x), exact),
                          (sample_importance(model, x), mas)):
            for g, w in zip(got, want):
                torch.testing.assert_close(g, w)
