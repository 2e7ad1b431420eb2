"""CLASSP against hand-written oracles, AdaGrad, itself (foreach vs single tensor), and a reload."""

from __future__ import annotations

import copy
import math
import zlib

import numpy as np
import pytest
import torch
from torch.overrides import TorchFunctionMode

from classp import CLASSP, optim_flat
from classp.optim import RULES
from classp.testing.published import PublishedCLASSP

# ----------------------------------------------------------------------------------------
# Oracle: element by element in float64 Python, written from the paper's text, not the code.
# ----------------------------------------------------------------------------------------


def oracle(w0, grads, *, lr, threshold, power, eps, decay, rule):
    """Return (weights, sums, counts) after applying `grads` one step at a time."""
    w = [float(x) for x in w0]
    s = [0.0] * len(w)
    n = [0] * len(w)
    for g in grads:
        g = [float(x) for x in g]
        if rule == "reference-code":
            tensor_passes = (1.0 if any(x != 0 for x in g) else 0.0) > threshold
        for i, gi in enumerate(g):
            if rule == "algorithm":
                if gi * gi > threshold:
                    s[i] += abs(gi) ** power
                    w[i] -= lr * gi / (eps + s[i]) ** (1 / power) if decay else lr * gi
                    n[i] += 1
            elif rule == "equation":
                if gi * gi > threshold:
                    w[i] -= lr * gi / math.sqrt(eps + s[i]) if decay else lr * gi
                    n[i] += 1
                s[i] += abs(gi) ** power
            else:
                if tensor_passes:
                    s[i] += abs(gi)
                    w[i] -= lr * gi / (s[i] + eps) ** (1 / power) if decay else lr * gi
                    n[i] += gi != 0  # counts weights that moved
    return np.array(w), np.array(s), np.array(n)


def run_classp(w0, grads, *, foreach, **hyper):
    """Weights, eps + s (what the optimizer keeps) and update counts after `grads`."""
    p = torch.nn.Parameter(torch.tensor(w0, dtype=torch.float32))
    opt = CLASSP([p], foreach=foreach, track_updates=True, **hyper)
    for g in grads:
        p.grad = torch.tensor(g, dtype=torch.float32)
        opt.step()
    state = opt.state[p]
    return p.detach().numpy(), state["eps_plus_sum"].numpy(), state["update_count"].numpy()


def random_problem(seed, n=64, steps=6, scale=1.0):
    rng = np.random.default_rng(seed)
    w0 = rng.normal(size=n)
    grads = rng.normal(scale=scale, size=(steps, n))
    grads[:, :4] = 0.0  # some exactly-zero gradients
    return w0.astype(np.float32), grads.astype(np.float32)


CASES = [
    dict(threshold=t, power=p, decay=d)
    for t in (0.0, 0.5, 1.5)
    for p in (1.0, 2.0, 1.5)
    for d in (True, False)
]


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"t{c['threshold']}-p{c['power']}-d{int(c['decay'])}")
@pytest.mark.parametrize("foreach", [False, True], ids=["single", "foreach"])
def test_each_rule_matches_the_oracle(rule, case, foreach):
    # zlib.crc32, not hash(): a string's hash changes from process to process
    w0, grads = random_problem(seed=zlib.crc32(f"{rule}-{case}".encode()))
    hyper = dict(lr=0.1, eps=1e-3, rule=rule, **case)
    w, eps_plus_s, n = run_classp(w0, grads, foreach=foreach, **hyper)
    w_ref, s_ref, n_ref = oracle(w0, grads, **hyper)
    np.testing.assert_allclose(w, w_ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(eps_plus_s, hyper["eps"] + s_ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(n, n_ref)


# ----------------------------------------------------------------------------------------
# The reference-code rule against the published loop (classp.testing.published, which restates the
# published CLASSP.py per tensor and shares no code with classp.optim), in float64.
# ----------------------------------------------------------------------------------------

REFERENCE_CASES = [dict(threshold=t, power=p, decay=d)
                   for t in (0.0, 0.5, 1.0, 2.0)  # below 1 nothing is masked, from 1 everything
                   for p in (1.0, 2.0, 1.5)  # p never enters the sum
                   for d in (True, False)]


def _two_tensor_problem(seed):
    rng = np.random.default_rng(seed)
    shapes = [(5, 3), (7,)]
    w0 = [rng.normal(size=s) for s in shapes]
    grads = [[rng.normal(size=s) for s in shapes] for _ in range(5)]
    grads[2][1][:] = 0.0  # a step in which one whole tensor has a zero gradient
    grads[3][0][0, :] = 0.0  # and some zero entries in another
    return w0, grads


def _run(opt_class, w0, grads, groups, dtype, **hyper):
    params = [torch.nn.Parameter(torch.tensor(w, dtype=dtype)) for w in w0]
    if groups:  # one group per tensor, same settings
        opt = opt_class([{"params": [p]} for p in params], **hyper)
    else:
        opt = opt_class(params, **hyper)
    for step in grads:
        for p, g in zip(params, step):
            p.grad = torch.tensor(g, dtype=dtype)
        opt.step()
    # eps + s: ours keeps it; the published loop keeps s
    accumulators = [opt.state[p]["eps_plus_sum"] if "eps_plus_sum" in opt.state[p]
                    else hyper["eps"] + opt.state[p]["sum"] for p in params]
    return ([p.detach().double().numpy() for p in params],
            [a.double().numpy() for a in accumulators])


@pytest.mark.parametrize("groups", [False, True], ids=["one-group", "two-groups"])
@pytest.mark.parametrize("case", REFERENCE_CASES,
                         ids=lambda c: f"t{c['threshold']}-p{c['power']}-d{int(c['decay'])}")
@pytest.mark.parametrize("foreach", [False, True], ids=["single", "foreach"])
def test_the_reference_code_rule_is_the_published_loop(case, foreach, groups):
    # With several groups the published loop applies the first group's settings to all of
    # them; ours reads each group's own. The groups here share their settings, so both
    # readings must agree.
    w0, grads = _two_tensor_problem(zlib.crc32(f"reference-{case}".encode()))
    hyper = dict(lr=0.1, eps=1e-3, **case)
    ours = _run(lambda ps, **h: CLASSP(ps, rule="reference-code", foreach=foreach, **h),
                w0, grads, groups, torch.float32, **hyper)
    published = _run(PublishedCLASSP, w0, grads, groups, torch.float64, **hyper)
    for mine, theirs in zip(ours[0] + ours[1], published[0] + published[1]):
        np.testing.assert_allclose(mine, theirs, rtol=1e-5, atol=1e-6)


def test_algorithm_threshold_masks_per_weight_and_the_reference_code_per_tensor():
    w0 = np.zeros(2, dtype=np.float32)
    grads = [np.array([0.1, 2.0], dtype=np.float32)]  # g^2 = 0.01 and 4.0
    _, _, n_alg = run_classp(w0, grads, foreach=False, lr=0.1, threshold=0.5, rule="algorithm")
    _, _, n_ref = run_classp(w0, grads, foreach=False, lr=0.1, threshold=0.5, rule="reference-code")
    _, _, n_ref_high = run_classp(
        w0, grads, foreach=False, lr=0.1, threshold=1.0, rule="reference-code"
    )
    _, _, n_ref_zero = run_classp(w0, [np.array([0.0, 0.1], dtype=np.float32)], foreach=False,
                                  lr=0.1, threshold=0.5, rule="reference-code")
    assert n_alg.tolist() == [0, 1]
    assert n_ref.tolist() == [1, 1]  # True > 0.5: nothing masked
    assert n_ref_zero.tolist() == [0, 1]  # g = 0 passes the mask but does not move
    assert n_ref_high.tolist() == [0, 0]  # True > 1.0 is False: everything masked


def test_reference_code_discards_the_power():
    w0 = np.zeros(3, dtype=np.float32)
    grads = [np.array([0.5, -2.0, 3.0], dtype=np.float32)] * 2
    _, eps_plus_s, _ = run_classp(w0, grads, foreach=False, lr=0.1, power=2.0, eps=0.0,
                                  rule="reference-code")
    np.testing.assert_allclose(eps_plus_s, [1.0, 4.0, 6.0])


@pytest.mark.parametrize("foreach", [False, True])
def test_power_two_threshold_zero_is_adagrad_with_eps_inside_the_root(foreach):
    w0, grads = random_problem(seed=7)
    lr, eps = 0.05, 1e-2
    w, _, _ = run_classp(w0, grads, foreach=foreach, lr=lr, eps=eps, power=2.0, threshold=0.0)
    # Closed form: w_T = w_0 - sum_t lr g_t / sqrt(eps + sum_{k<=t} g_k^2)
    g = grads.astype(np.float64)
    expected = w0 - (lr * g / np.sqrt(eps + np.cumsum(g * g, axis=0))).sum(axis=0)
    np.testing.assert_allclose(w, expected, rtol=1e-5, atol=1e-6)


def _mlp():
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(7, 16), torch.nn.Tanh(), torch.nn.Linear(16, 16), torch.nn.Tanh(),
        torch.nn.Linear(16, 3),
    )


def _train(model, opt, steps, seed):
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x = torch.randn(32, 7, generator=gen)
        y = torch.randint(0, 3, (32,), generator=gen)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()


def _fixed_gradients(shapes, steps: int, seed: int, zero_every: int):
    """Initial weights and a gradient sequence fed to every path alike (no model feedback,
    which would amplify rounding); tensor 3 gets an all-zero gradient every `zero_every`."""
    gen = torch.Generator().manual_seed(seed)
    init = [torch.randn(s, generator=gen) for s in shapes]
    grads = [[torch.randn(s, generator=gen) * 0.1 for s in shapes] for _ in range(steps)]
    for step in grads[::zero_every]:
        step[3].zero_()
    return init, grads


def _feed(init, grads, make_optimizer, before_step=lambda i, opt: None):
    params = [torch.nn.Parameter(t.clone()) for t in init]
    opt = make_optimizer(params)
    for i, step in enumerate(grads):
        for p, g in zip(params, step):
            p.grad = g.clone()
        before_step(i, opt)
        opt.step()
    return params, opt


@pytest.fixture(params=["per tensor", "gathered"])
def flat_writes(request, monkeypatch):
    """The flat path writes what it derives from the gradients either straight from each
    tensor into the flat buffer (large tensors) or by one gathering copy and an op over the
    whole buffer (many small ones); both ways, whatever the tensors' sizes here."""
    monkeypatch.setattr(optim_flat, "_LARGE_TENSOR", 1 if request.param == "per tensor" else 10**12)
    return request.param


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("power", [1.0, 2.0, 0.7])
@pytest.mark.parametrize("decay", [True, False])
@pytest.mark.parametrize("threshold", [0.0, 1e-3])
def test_foreach_and_single_tensor_paths_agree(rule, power, decay, threshold, flat_writes):
    """s bit for bit for p = 1 and 2 (the same |g|^p added in the same order; other powers
    round by where an element falls in a vector register); the weights too without decay
    (the same multiply and add), with it up to rounding (the flat path divides and scales
    in one addcdiv)."""
    init, grads = _fixed_gradients([(16, 7), (16,), (3, 3, 2, 2), (1,), (200,), (4, 5)],
                                   steps=20, seed=5, zero_every=4)
    (params0, opt0), (params1, opt1) = [
        _feed(init, grads, lambda ps, foreach=foreach: CLASSP(
            ps, lr=0.05, threshold=threshold, power=power, decay=decay, rule=rule,
            foreach=foreach, track_updates=True))
        for foreach in (False, True)]
    for a, b in zip(params0, params1):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
        assert decay or torch.equal(a, b)
        if power in (1.0, 2.0):
            assert torch.equal(opt0.state[a]["eps_plus_sum"], opt1.state[b]["eps_plus_sum"])
        torch.testing.assert_close(opt0.state[a]["eps_plus_sum"], opt1.state[b]["eps_plus_sum"], rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(opt0.state[a]["update_count"], opt1.state[b]["update_count"])


# Few settings, each compiled once (seconds each): every rule, both powers, decay on and
# off, masked and not, eps 0; Dynamo keeps at most eight variants of one function.
FUSED_CASES = [
    ("algorithm", 1.0, False, 1e-3, 1e-5),
    ("algorithm", 2.0, True, 1e-3, 1e-5),
    ("algorithm", 1.5, True, 1e-3, 0.0),
    ("equation", 1.0, True, 1e-3, 1e-5),
    ("equation", 2.0, False, 0.0, 1e-5),
    ("reference-code", 1.0, True, 0.5, 1e-5),
]


@pytest.mark.parametrize("rule, power, decay, threshold, eps", FUSED_CASES)
def test_the_fused_path_gives_the_flat_path_s_weights(rule, power, decay, threshold, eps):
    """Equal up to rounding: the compiler may contract a multiply and an add that eager
    torch rounds separately, and the root and division may round differently."""
    import torch._dynamo

    init, grads = _fixed_gradients([(16, 7), (16,), (3, 3, 2, 2), (1,), (200,)],
                                   steps=12, seed=7, zero_every=3)
    no_recompile = torch._dynamo.config.patch(error_on_recompile=True)

    def before_step(i, opt):
        if i == 1 and opt.param_groups[0]["fused"]:  # compiled by now: a recompile fails
            no_recompile.__enter__()
        if i == 6:  # a schedule's change of lr must not need a new kernel
            opt.param_groups[0]["lr"] = 0.02

    flat, flat_opt = _feed(init, grads, lambda ps: CLASSP(
        ps, lr=0.05, threshold=threshold, power=power, eps=eps, decay=decay, rule=rule,
        track_updates=True), before_step)
    try:
        fused, fused_opt = _feed(init, grads, lambda ps: CLASSP(
            ps, lr=0.05, threshold=threshold, power=power, eps=eps, decay=decay, rule=rule,
            fused=True, track_updates=True), before_step)
    finally:
        no_recompile.__exit__(None, None, None)
    assert any(not torch.equal(p, t) for p, t in zip(fused, init))  # it moved
    for a, b in zip(flat, fused):
        torch.testing.assert_close(b, a, rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(fused_opt.state[b]["eps_plus_sum"], flat_opt.state[a]["eps_plus_sum"],
                                   rtol=1e-6, atol=1e-7)
        assert torch.equal(fused_opt.state[b]["update_count"], flat_opt.state[a]["update_count"])


def test_fused_and_the_single_tensor_path_cannot_both_be_asked_for():
    with pytest.raises(ValueError, match="fused=True and foreach=False ask for two paths"):
        CLASSP([torch.nn.Parameter(torch.zeros(2))], fused=True, foreach=False)
    with pytest.raises(ValueError, match="Invalid fused: .yes.; allowed: True or False"):
        CLASSP([torch.nn.Parameter(torch.zeros(2))], fused="yes")


@pytest.mark.parametrize("foreach", [False, True])
def test_state_dict_round_trip_continues_identically(foreach, tmp_path):
    model = _mlp()
    opt = CLASSP(model.parameters(), lr=0.1, threshold=1e-5, foreach=foreach, track_updates=True)
    _train(model, opt, steps=10, seed=1)
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, tmp_path / "ckpt.pt")
    _train(model, opt, steps=10, seed=2)

    restored = _mlp()
    restored_opt = CLASSP(
        restored.parameters(), lr=0.5, threshold=0.0, foreach=foreach, track_updates=True
    )
    ckpt = torch.load(tmp_path / "ckpt.pt")
    restored.load_state_dict(ckpt["model"])
    restored_opt.load_state_dict(ckpt["opt"])  # also restores lr and threshold
    _train(restored, restored_opt, steps=10, seed=2)
    for a, b in zip(model.parameters(), restored.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
        torch.testing.assert_close(opt.state[a]["eps_plus_sum"], restored_opt.state[b]["eps_plus_sum"], rtol=0, atol=0)


@pytest.mark.parametrize("foreach", [False, True])
def test_state_survives_a_change_of_threshold_and_decay_between_tasks(foreach):
    w0, grads = random_problem(seed=11, steps=8)
    first, second = grads[:4], grads[4:]
    p = torch.nn.Parameter(torch.tensor(w0))
    opt = CLASSP([p], lr=0.2, threshold=0.5, power=1.0, eps=1e-3, decay=False, foreach=foreach)
    for g in first:
        p.grad = torch.tensor(g)
        opt.step()
    sum_tensor = opt.state[p]["eps_plus_sum"]
    # The paper's switch when the second task starts.
    opt.param_groups[0]["threshold"] = 0.0
    opt.param_groups[0]["decay"] = True
    for g in second:
        p.grad = torch.tensor(g)
        opt.step()
    assert opt.state[p]["eps_plus_sum"] is sum_tensor  # never re-created

    w_mid, s_mid, _ = oracle(w0, first, lr=0.2, threshold=0.5, power=1.0, eps=1e-3,
                             decay=False, rule="algorithm")
    # Continue the oracle from the first task's weights and sums.
    w, s = list(w_mid), list(s_mid)
    for g in second:
        for i, gi in enumerate(map(float, g)):
            if gi * gi > 0.0:
                s[i] += abs(gi)
                w[i] -= 0.2 * gi / (1e-3 + s[i])
    np.testing.assert_allclose(p.detach().numpy(), w, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(opt.state[p]["eps_plus_sum"].numpy(), 1e-3 + np.array(s),
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("foreach", [False, True])
def test_an_eps_edited_between_tasks_shifts_the_accumulator_once(foreach):
    w0, grads = random_problem(seed=12, steps=6)
    p = torch.nn.Parameter(torch.tensor(w0))
    opt = CLASSP([p], lr=0.2, eps=1e-3, foreach=foreach)
    for g in grads[:3]:
        p.grad = torch.tensor(g)
        opt.step()
    opt.param_groups[0]["eps"] = 0.5
    for g in grads[3:]:
        p.grad = torch.tensor(g)
        opt.step()
    # The oracle with eps 1e-3, then 0.5 on the same accumulated s.
    w, s = [float(x) for x in w0], [0.0] * len(w0)
    for t, g in enumerate(grads):
        eps = 1e-3 if t < 3 else 0.5
        for i, gi in enumerate(map(float, g)):
            if gi != 0.0:
                s[i] += abs(gi)
                w[i] -= 0.2 * gi / (eps + s[i])
    np.testing.assert_allclose(p.detach().numpy(), w, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(opt.state[p]["eps_plus_sum"].numpy(), 0.5 + np.array(s),
                               rtol=1e-5, atol=1e-6)
    assert opt.state[p]["eps_in_sum"] == 0.5


def test_a_group_s_own_bad_setting_is_refused_when_the_optimizer_is_made():
    good, bad = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(2))
    with pytest.raises(ValueError, match="Invalid power: 0; allowed: a finite number > 0"):
        CLASSP([{"params": [good]}, {"params": [bad], "power": 0}], lr=0.1)
    opt = CLASSP([good], lr=0.1)
    with pytest.raises(ValueError, match="Invalid lr: -1"):
        opt.add_param_group({"params": [bad], "lr": -1})


def test_checking_settings_adds_nothing_to_the_saved_param_groups():
    p = torch.nn.Parameter(torch.zeros(2))
    opt = CLASSP([p], lr=0.1)
    p.grad = torch.ones(2)
    opt.step()
    assert set(opt.state_dict()["param_groups"][0]) == set(CLASSP([p]).state_dict()["param_groups"][0])


def test_the_flat_path_s_scratch_is_reported_beside_the_accumulator():
    """Two floats per weight of scratch (the rules' buffers), resident while the optimizer
    lives: what a memory comparison with EWC must count."""
    params = [torch.nn.Parameter(torch.zeros(5, 3)), torch.nn.Parameter(torch.zeros(7))]
    opt = CLASSP(params, lr=0.1, track_updates=True)  # the counting buffer is left out
    assert opt.scratch_bytes() == 0  # nothing allocated before the first step
    for q in params:
        q.grad = torch.ones_like(q)
    opt.step()
    assert opt.accumulator_bytes() == 4 * 22 and opt.scratch_bytes() == 2 * 4 * 22
    reference = CLASSP(params, lr=0.1, foreach=False)  # the single-tensor loop keeps none
    reference.step()
    assert reference.scratch_bytes() == 0


def test_maximize_climbs():
    p = torch.nn.Parameter(torch.zeros(3))
    opt = CLASSP([p], lr=0.1, maximize=True)
    p.grad = torch.ones(3)
    opt.step()
    assert (p > 0).all()


def test_parameters_without_gradient_are_left_alone():
    a, b = torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.ones(2))
    opt = CLASSP([a, b], lr=0.1)
    a.grad = torch.ones(2)
    opt.step()
    assert b not in opt.state and torch.equal(b, torch.ones(2))


def test_accumulator_bytes_is_one_float_per_weight():
    model = _mlp()
    opt = CLASSP(model.parameters(), lr=0.1)
    _train(model, opt, steps=1, seed=0)
    n_weights = sum(p.numel() for p in model.parameters())
    assert opt.accumulator_bytes() == 4 * n_weights


class _ForbidHostSync(TorchFunctionMode):
    """Raise if anything in step() copies a tensor's value to the host."""

    FORBIDDEN = {torch.Tensor.item, torch.Tensor.tolist, torch.Tensor.__bool__,
                 torch.Tensor.__float__, torch.Tensor.__int__, torch.Tensor.cpu,
                 torch.Tensor.numpy}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in self.FORBIDDEN:
            raise AssertionError(f"host synchronisation through {func.__name__}")
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("foreach", [False, True])
def test_step_does_not_read_tensor_values_on_the_host(rule, foreach):
    model = _mlp()
    opt = CLASSP(model.parameters(), lr=0.1, threshold=1e-4, rule=rule, foreach=foreach,
                 track_updates=True)
    torch.nn.functional.cross_entropy(model(torch.randn(4, 7)), torch.tensor([0, 1, 2, 0])).backward()
    with _ForbidHostSync():
        opt.step()
    # The guard itself works:
    with pytest.raises(AssertionError, match="host synchronisation"), _ForbidHostSync():
        bool(torch.ones(1) > 0)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(lr=-0.1), "Invalid lr: -0.1; allowed: a finite number >= 0"),
        (dict(lr=float("nan")), "Invalid lr: nan"),
        (dict(lr="0.1"), "Invalid lr: '0.1' is not a number"),
        (dict(threshold=-1.0), "Invalid threshold: -1.0; allowed: a finite number >= 0"),
        (dict(threshold=float("inf")), "Invalid threshold: inf"),
        (dict(eps=-1e-8), "Invalid eps: -1e-08; allowed: a finite number >= 0"),
        (dict(power=0.0), "Invalid power: 0.0; allowed: a finite number > 0"),
        (dict(power=-2.0), "Invalid power: -2.0; allowed: a finite number > 0"),
        (dict(power=float("inf")), "Invalid power: inf"),
        (dict(rule="paper"), "Invalid rule: 'paper'; allowed: algorithm, equation, reference-code"),
        (dict(decay="yes"), "Invalid decay: 'yes'; allowed: True or False"),
    ],
)
def test_bad_arguments_name_the_argument_and_the_allowed_range(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("+", r"\+")):
        CLASSP([torch.nn.Parameter(torch.ones(1))], **{"lr": 0.1, **kwargs})


def test_a_bad_setting_edited_into_a_group_is_caught_at_the_next_step():
    p = torch.nn.Parameter(torch.ones(1))
    opt = CLASSP([p], lr=0.1)
    opt.param_groups[0]["threshold"] = -1
    p.grad = torch.ones(1)
    before = copy.deepcopy(p.detach())
    with pytest.raises(ValueError, match="Invalid threshold"):
        opt.step()
    assert torch.equal(p.detach(), before)


def test_sparse_gradients_are_refused():
    emb = torch.nn.Embedding(5, 2, sparse=True)
    opt = CLASSP(emb.parameters(), lr=0.1)
    emb(torch.tensor([1])).sum().backward()
    with pytest.raises(RuntimeError, match="sparse gradients"):
        opt.step()


def test_foreach_state_is_laid_out_flat_so_the_accumulator_is_updated_in_place(tmp_path):
    from classp.optim_flat import as_flat

    model = _mlp()
    opt = CLASSP(model.parameters(), lr=0.1, foreach=True, track_updates=True)
    _train(model, opt, steps=2, seed=0)
    params = list(model.parameters())
    for key in ("eps_plus_sum", "update_count"):
        _, is_view = as_flat([opt.state[p][key] for p in params])
        assert is_view, key
    torch.save(opt.state_dict(), tmp_path / "opt.pt")
    fresh = CLASSP(model.parameters(), lr=0.1, foreach=True, track_updates=True)
    fresh.load_state_dict(torch.load(tmp_path / "opt.pt"))
    _, is_view = as_flat([fresh.state[p]["eps_plus_sum"] for p in params])
    assert is_view


def test_parameters_that_skip_a_step_agree_between_paths():
    gen = torch.Generator().manual_seed(9)
    init = [torch.randn(5, 3, generator=gen), torch.randn(4, generator=gen)]
    steps = [[torch.randn(5, 3, generator=gen), torch.randn(4, generator=gen)] for _ in range(6)]
    results = []
    for foreach in (False, True):
        params = [torch.nn.Parameter(t.clone()) for t in init]
        opt = CLASSP(params, lr=0.1, threshold=0.1, foreach=foreach, track_updates=True)
        for i, grads in enumerate(steps):
            params[0].grad = grads[0].clone()
            params[1].grad = None if i in (0, 3) else grads[1].clone()  # joins late, skips one
            opt.step()
        results.append((params, opt))
    for a, b in zip(results[0][0], results[1][0]):
        torch.testing.assert_close(a, b)
        torch.testing.assert_close(results[0][1].state[a]["eps_plus_sum"], results[1][1].state[b]["eps_plus_sum"])
        torch.testing.assert_close(results[0][1].state[a]["update_count"],
                                   results[1][1].state[b]["update_count"])


def test_the_functional_form_updates_separate_tensors_in_place():
    from classp.optim import classp as classp_functional

    w = [torch.ones(3), torch.ones(2)]
    g = [torch.full((3,), 2.0), torch.full((2,), -1.0)]
    s = [torch.zeros(3), torch.zeros(2)]
    classp_functional(w, g, s, lr=0.5, threshold=0.0, power=1.0, eps=0.0, decay=True,
                      foreach=True)
    # s = |g|, w = 1 - 0.5 * g / |g|
    torch.testing.assert_close(s[0], torch.full((3,), 2.0))
    torch.testing.assert_close(w[0], torch.full((3,), 0.5))
    torch.testing.assert_close(w[1], torch.full((2,), 1.5))


def test_a_pickled_optimizer_keeps_its_settings_and_state():
    import pickle

    model = _mlp()
    opt = CLASSP(model.parameters(), lr=0.1, threshold=1e-4, foreach=True, track_updates=True)
    _train(model, opt, steps=3, seed=0)
    clone = pickle.loads(pickle.dumps(opt))
    assert clone.track_updates and clone.param_groups[0]["threshold"] == 1e-4
    assert len(clone.state) == len(opt.state)


# -- the optimizer as a library: bad arguments are refused, never silently wrong ---------

@pytest.mark.parametrize("flag, value", [("maximize", "false"), ("track_updates", "no"),
                                         ("foreach", "no"), ("fused", 1)])
def test_flags_must_be_booleans(flag, value):
    w = torch.nn.Parameter(torch.ones(3))
    with pytest.raises(ValueError, match=f"Invalid {flag}: {value!r}"):
        CLASSP([w], lr=0.1, **{flag: value})


@pytest.mark.parametrize("other", [torch.optim.Adam, torch.optim.Adagrad])
def test_another_optimizers_state_dict_is_refused_when_loaded(other):
    w = torch.nn.Parameter(torch.ones(3))
    theirs = other([w], lr=0.1)
    w.grad = torch.ones(3)
    theirs.step()
    ours = CLASSP([w], lr=0.1)
    with pytest.raises(ValueError, match="not a CLASSP state_dict: its param groups lack threshold, power"):
        ours.load_state_dict(theirs.state_dict())
    assert ours.param_groups[0]["threshold"] == 0.0  # nothing was loaded


def test_an_eps_that_rounds_to_zero_in_half_precision_is_refused_not_turned_into_nan():
    w = torch.nn.Parameter(torch.ones(3, dtype=torch.float16))
    opt = CLASSP([w], lr=0.1, eps=1e-8)
    w.grad = torch.tensor([0.5, 0.0, 0.25], dtype=torch.float16)
    with pytest.raises(ValueError, match=r"Invalid eps: 1e-08 rounds to 0 in torch.float16"):
        opt.step()
    assert w.tolist() == [1.0, 1.0, 1.0]
    ok = CLASSP([w], lr=0.1, eps=1e-4)  # representable: the step is finite
    ok.step()
    assert torch.isfinite(w).all()


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("threshold", [0.0, 0.01])
def test_a_nan_gradient_poisons_its_weight_alike_on_every_path(rule, threshold):
    grad = torch.tensor([float("nan"), 0.5, float("inf"), 0.0, 1e-3])
    results = []
    for foreach in (False, True):
        w = torch.nn.Parameter(torch.ones(5))
        opt = CLASSP([w], lr=0.1, threshold=threshold, rule=rule, foreach=foreach)
        w.grad = grad.clone()
        opt.step()
        results.append((w.detach().clone(), opt.state[w]["eps_plus_sum"].clone()))
    (w_ref, s_ref), (w_flat, s_flat) = results
    assert torch.isnan(w_ref[0]) and torch.isnan(w_flat[0])  # not skipped on either path
    torch.testing.assert_close(w_flat, w_ref, equal_nan=True)
    torch.testing.assert_close(s_flat, s_ref, equal_nan=True)


def test_update_counts_name_each_weight_s_moves_by_parameter():
    """The public reading of track_updates: how many steps moved each weight."""
    moved, still = torch.nn.Parameter(torch.zeros(3)), torch.nn.Parameter(torch.zeros(2))
    opt = CLASSP([moved, still], lr=0.1, threshold=0.5, track_updates=True)
    for _ in range(3):
        moved.grad = torch.tensor([1.0, 0.1, -2.0])  # squared: 1, 0.01, 4 against 0.5
        still.grad = torch.zeros(2)
        opt.step()
    counts = opt.update_counts()
    assert counts[moved].tolist() == [3, 0, 3] and counts[still].tolist() == [0, 0]
    assert CLASSP([moved], lr=0.1).update_counts() == {}  # off unless asked for
