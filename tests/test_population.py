"""Population runs (classp.population): each member of a population gets the Result that
`engine.run` gives its config alone, within float tolerance, for every method, with an MLP
and with the paper's CNN (its dropout masks each member's own, the very masks of its run
alone), in every scenario; a member that diverges or is stopped leaves without stopping
the others; what populations cannot train yet is refused in one line."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from classp.data import DataOptions, load_sequence
from classp.data.base import Split, Task, TaskSequence, TrainingProtocol
from classp.engine import RunConfig, StopRun, run
from classp.errors import UserError
from classp.models import InputShape
from classp.population import run_population

# Batched products round differently from single ones (an ulp). Over a short run that
# stays far below a weight's size, except where a rule makes a yes-or-no decision on a
# gradient (CLASSP's threshold): a weight at the edge may move in one run and not in the
# other. So: nearly every weight within the tolerance, and at most a few test samples
# answered differently.
WEIGHT_TOLERANCE = 1e-3
WEIGHT_RELATIVE_TOLERANCE = 1e-4  # a weight a run has grown large (EWC's stiff output bias)
SHARE_OF_WEIGHTS_WITHIN = 0.97
ACCURACY_TOLERANCE = 0.02

METHOD_PARAMS = {
    "sgd": [{"lr": 0.05}, {"lr": 0.1}, {"lr": 0.02}],
    "adam": [{"lr": 1e-3}, {"lr": 3e-3}, {"lr": 5e-4}],
    "adagrad": [{"lr": 0.01}, {"lr": 0.03}, {"lr": 0.005}],
    "classp": [{"lr": 0.05, "eps": 1e-3, "rule": "algorithm"},
               {"lr": 0.02, "eps": 1e-3, "threshold": 1e-6, "rule": "algorithm", "power": 2.0},
               {"lr": 0.05, "eps": 1e-3, "rule": "reference-code", "schedule": "constant"}],
    "ewc": [{"lr": 0.05, "ewc_lambda": 10.0}, {"lr": 0.05, "ewc_lambda": 100.0},
            {"lr": 0.02, "ewc_lambda": 1.0, "mode": "online"}],
    "si": [{"lr": 0.05, "c": 0.1}, {"lr": 0.05, "c": 1.0}, {"lr": 0.02, "c": 10.0}],
    "mas": [{"lr": 0.05, "mas_lambda": 1.0}, {"lr": 0.05, "mas_lambda": 10.0}, {"lr": 0.02}],
    "l2": [{"lr": 0.05, "l2_lambda": 1.0}, {"lr": 0.05, "l2_lambda": 10.0}, {"lr": 0.02}],
    "joint": [{"lr": 0.05}, {"lr": 0.1}, {"lr": 0.02}],
}


# The paper protocol's CLASSP as published: its rule and its phase switch.
PAPER_PROTOCOL_CLASSP = {"lr": 0.05, "threshold": 0.5, "power": 1.0, "eps": 1e-5,
                         "rule": "reference-code", "schedule": "published"}


@pytest.fixture(scope="module")
def permuted():
    return load_sequence("permuted-digits", DataOptions(num_tasks=3))


@pytest.fixture(scope="module")
def permuted_in_train_mode():
    """Two permuted-digits tasks whose training sets are also evaluated with dropout on, as
    the paper's protocol does: evaluation draws from each member's generator too."""
    sequence = load_sequence("permuted-digits", DataOptions(num_tasks=2))
    return dataclasses.replace(sequence, protocol=dataclasses.replace(
        sequence.protocol, eval_train=True, train_eval_mode="train"))


class Weights:
    """An observer keeping the model's weights at every task's end."""

    def __init__(self):
        self.at_task_end: list[list[torch.Tensor]] = []
        self.update_totals: list[list[float]] = []

    def on_step(self, event) -> None: ...
    def on_run_end(self, result) -> None: ...

    def on_run_start(self, config, sequence, model, method) -> None:
        self.at_start = [p.detach().clone() for p in model.parameters()]

    def on_task_end(self, event) -> None:
        self.at_task_end.append([p.detach().clone() for p in event.model.parameters()])
        if event.updates is not None:  # how many steps moved each parameter's weights, summed
            self.update_totals.append(event.updates.totals().tolist())


def _alone_and_together(configs, sequence, observers=None):
    """Each config run alone, and all of them as one population, each with fresh
    observers of the same kind; returns [(alone, member, alone's weights, member's weights)]."""
    make = observers or (lambda: [])
    together_watch = [Weights() for _ in configs]
    together = run_population(configs, [[w, *make()] for w in together_watch], sequence=sequence)
    out = []
    for config, member, member_weights in zip(configs, together, together_watch):
        alone_weights = Weights()
        alone = run(config, [alone_weights, *make()], sequence=sequence)
        out.append((alone, member, alone_weights, member_weights))
    return out


def _assert_same_run(alone, member, alone_weights, member_weights):
    assert (member.status, member.steps, member.diverged_at) == (alone.status, alone.steps, alone.diverged_at)
    assert member.task_names == alone.task_names
    assert member.state_bytes == alone.state_bytes and member.num_parameters == alone.num_parameters
    for split, rows in alone.accuracy.items():
        assert len(member.accuracy[split]) == len(rows)
        assert member.accuracy[split][0] == rows[0]  # before training: each member evaluated alone
        for got, want in zip(member.accuracy[split], rows):
            assert got == pytest.approx(want, abs=ACCURACY_TOLERANCE), split
    # the same update counts (sparsity), up to a weight at a rule's edge here and there
    assert len(member_weights.update_totals) == len(alone_weights.update_totals)
    for got, want in zip(member_weights.update_totals, alone_weights.update_totals):
        assert got == pytest.approx(want, rel=0.01)
    # the same initial weights, bit for bit
    assert all(torch.equal(g, w) for g, w in zip(member_weights.at_start, alone_weights.at_start))
    assert len(member_weights.at_task_end) == len(alone_weights.at_task_end)
    for got, want in zip(member_weights.at_task_end, alone_weights.at_task_end):
        for g, w in zip(got, want):
            within = torch.isclose(g, w, rtol=WEIGHT_RELATIVE_TOLERANCE,
                                   atol=WEIGHT_TOLERANCE).float().mean().item()
            assert within >= SHARE_OF_WEIGHTS_WITHIN, f"{within:.4f} of the weights within {WEIGHT_TOLERANCE}"


@pytest.mark.parametrize("method", sorted(METHOD_PARAMS))
def test_each_member_is_the_run_alone_for_every_method(method, permuted):
    configs = [RunConfig(sequence="permuted-digits", method=method, method_params=params,
                         seed=seed, epochs=1, num_tasks=3, track_updates=True)
               for seed, params in zip((0, 7, 11), METHOD_PARAMS[method])]
    for pair in _alone_and_together(configs, permuted):
        _assert_same_run(*pair)
        assert pair[1].status == "finished"


@pytest.mark.parametrize("method", sorted(METHOD_PARAMS))
def test_each_member_is_the_run_alone_with_the_papers_cnn_and_its_dropout(method, permuted_in_train_mode):
    configs = [RunConfig(sequence="permuted-digits", model="paper-cnn", method=method,
                         method_params=params, seed=seed, epochs=1, num_tasks=2, shuffle=True,
                         track_updates=True)
               for seed, params in zip((0, 7, 11), METHOD_PARAMS[method])]
    for alone, member, alone_weights, member_weights in _alone_and_together(configs, permuted_in_train_mode):
        _assert_same_run(alone, member, alone_weights, member_weights)
        assert member.status == "finished" and len(member.accuracy["train"]) == 3


def test_the_published_cnns_channel_dropout_is_each_members_own(permuted_in_train_mode):
    configs = [RunConfig(sequence="permuted-digits", model="paper-cnn-published", method=method,
                         method_params=params, seed=seed, epochs=1, num_tasks=2)
               for seed, method, params in ((0, "classp", {"lr": 0.05, "eps": 1e-3}),
                                            (1, "sgd", {"lr": 0.05}), (2, "ewc", {"lr": 0.05}),
                                            (3, "classp", PAPER_PROTOCOL_CLASSP),
                                            (4, "classp", {**PAPER_PROTOCOL_CLASSP, "lr": 0.1,
                                                           "threshold": 0.2}))]
    pairs = _alone_and_together(configs, permuted_in_train_mode)
    for pair in pairs:
        _assert_same_run(*pair)
    # Far below what one other dropout mask would move a weight by.
    assert max((g - w).abs().max().item() for g, w in zip(pairs[1][3].at_task_end[-1],
                                                          pairs[1][2].at_task_end[-1])) < 1e-4


def test_a_cnn_member_that_diverges_or_is_stopped_leaves_and_the_others_go_on(permuted_in_train_mode):
    configs = [RunConfig(sequence="permuted-digits", model="paper-cnn", method="sgd",
                         method_params={"lr": lr}, seed=seed, epochs=1, num_tasks=2)
               for seed, lr in ((0, 0.05), (1, 1e6), (2, 0.1))]
    together_watch = [Weights() for _ in configs]
    observers = [[together_watch[0]], [together_watch[1]], [together_watch[2], StopAfterFirstTask()]]
    together = run_population(configs, observers, sequence=permuted_in_train_mode)
    assert [r.status for r in together] == ["finished", "diverged", "stopped"]
    for config, member, member_weights, extra in zip(configs, together, together_watch,
                                                     ([], [], [StopAfterFirstTask()])):
        alone_weights = Weights()
        alone = run(config, [alone_weights, *extra], sequence=permuted_in_train_mode)
        _assert_same_run(alone, member, alone_weights, member_weights)


@pytest.mark.parametrize("model", ["mlp", "paper-cnn"])
@pytest.mark.parametrize("scenario", ["task", "class", "domain"])
def test_each_member_is_the_run_alone_in_every_scenario(scenario, model):
    sequence = load_sequence("split-digits", DataOptions(scenario=scenario))
    configs = [RunConfig(sequence="split-digits", scenario=scenario, method=method, seed=seed,
                         epochs=1, method_params=params, model=model)
               for seed, method, params in ((0, "sgd", {"lr": 0.05}), (1, "ewc", {"lr": 0.05}),
                                            (2, "classp", {"lr": 0.05, "eps": 1e-3}))]
    for pair in _alone_and_together(configs, sequence):
        _assert_same_run(*pair)


def test_members_of_one_population_may_differ_in_method_and_shuffle_their_own_data(permuted):
    configs = [RunConfig(sequence="permuted-digits", method=m, method_params=p, seed=s, epochs=1,
                         num_tasks=3, shuffle=True)
               for s, m, p in ((3, "sgd", {"lr": 0.05}), (4, "adam", {"lr": 1e-3}), (3, "si", {"lr": 0.05}))]
    pairs = _alone_and_together(configs, permuted)
    for pair in pairs:
        _assert_same_run(*pair)
    # Different seeds: different data orders and initial weights, hence different runs.
    assert pairs[0][1].accuracy["val"][0] != pairs[1][1].accuracy["val"][0]


def test_a_member_that_diverges_leaves_and_the_others_go_on(permuted):
    configs = [RunConfig(sequence="permuted-digits", method="sgd", method_params={"lr": lr},
                         seed=seed, epochs=1, num_tasks=3)
               for seed, lr in ((0, 0.05), (1, 1e6), (2, 0.1))]
    pairs = _alone_and_together(configs, permuted)
    for pair in pairs:
        _assert_same_run(*pair)
    assert [member.status for _, member, _, _ in pairs] == ["finished", "diverged", "finished"]
    assert pairs[1][1].diverged_at["task"] == 0 and len(pairs[1][1].accuracy["val"]) == 1


class StopAfterFirstTask:
    """An observer stopping its run after the first task, as the study's pruner does."""

    def on_run_start(self, *args) -> None: ...
    def on_step(self, event) -> None: ...
    def on_run_end(self, result) -> None: ...

    def on_task_end(self, event) -> None:
        raise StopRun


def test_a_stopped_member_leaves_with_what_it_had_and_the_others_go_on(permuted):
    configs = [RunConfig(sequence="permuted-digits", method="adam", method_params={"lr": 1e-3},
                         seed=seed, epochs=1, num_tasks=3) for seed in (0, 1)]
    together_watch = [Weights(), Weights()]
    together = run_population(configs, [[together_watch[0], StopAfterFirstTask()], [together_watch[1]]],
                              sequence=permuted)
    stopped_alone, finished_alone = Weights(), Weights()
    alone = [run(configs[0], [stopped_alone, StopAfterFirstTask()], sequence=permuted),
             run(configs[1], [finished_alone], sequence=permuted)]
    _assert_same_run(alone[0], together[0], stopped_alone, together_watch[0])
    _assert_same_run(alone[1], together[1], finished_alone, together_watch[1])
    assert [r.status for r in together] == ["stopped", "finished"]
    assert len(together[0].accuracy["val"]) == 2 and len(together[1].accuracy["val"]) == 4


def test_what_populations_cannot_train_yet_is_refused_in_one_line(permuted):
    base = RunConfig(sequence="permuted-digits", epochs=1, num_tasks=3)
    cases = [
        ([base, dataclasses.replace(base, seed=1, epochs=2)],
         "the runs of a population differ in epochs (1 and 2); only seed, method and method "
         "parameters may differ: run the others as a population of their own"),
        ([dataclasses.replace(base, loss_targets=(0.5,))] * 2,
         "populations train fixed epochs; this protocol ends tasks at loss targets: give "
         "--epochs, or run them one by one (population 1)"),
        ([dataclasses.replace(base, method="joint"), dataclasses.replace(base, method="sgd")],
         "joint training and sequential methods cannot share a population"),
        ([], "a population needs at least one run"),
    ]
    for configs, message in cases:
        with pytest.raises(UserError) as raised:
            run_population(configs, sequence=permuted)
        assert str(raised.value) == message


def test_the_transformers_are_refused_in_one_line():
    def split(n):
        return Split(torch.randint(1, 50, (n, 30)), torch.randint(0, 3, (n,)))

    tokens = TaskSequence("tokens", [Task(name, split(8), split(4), split(4)) for name in "ab"],
                          InputShape("tokens", (30,), 3, vocab_size=50),
                          TrainingProtocol(epochs=(1, 1), model="paper-transformer"))
    config = RunConfig(sequence="fpb-imdb", epochs=1)
    with pytest.raises(UserError) as raised:
        run_population([config, dataclasses.replace(config, seed=1)], sequence=tokens)
    assert str(raised.value) == (
        "populations train the MLPs and the paper's CNN for now (mlp, mlp-400, mlp-1000, "
        "paper-cnn, paper-cnn-published), not 'paper-transformer': run them one by one "
        "(population 1)")
