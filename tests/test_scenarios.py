"""The three scenarios: labels, heads and outputs as each has them, checked on the data
each run loads and on the heads it trains and evaluates."""

from __future__ import annotations

import pytest
import torch

from classp import scenarios
from classp.data import DataOptions, load_sequence
from classp.engine import RunConfig, run
from classp.errors import UserError
from classp.scenarios import ActiveOutputs, OutputHeads


@pytest.fixture(scope="module")
def by_scenario():
    return {s: load_sequence("split-digits", DataOptions(scenario=s)) for s in scenarios.SCENARIOS}


def test_task_and_domain_labels_are_positions_within_the_task_class_labels_are_kept(by_scenario):
    kept = by_scenario["class"]
    for scenario in ("task", "domain"):
        mapped = by_scenario[scenario]
        for original, task in zip(kept.tasks, mapped.tasks):
            assert task.classes == original.classes
            first, second = task.classes
            for split in ("train", "val", "test"):
                y, y_class = task.split(split).y, original.split(split).y
                assert torch.equal(y, (y_class == second).long())  # {2, 3} -> 0, 1
                assert set(y_class.tolist()) <= {first, second}
    assert [t.classes for t in kept.tasks] == [(0, 1), (2, 3), (4, 5), (6, 7), (8, 9)]


def test_each_scenario_gives_the_model_its_heads_and_units(by_scenario):
    shapes = {s: (seq.input.heads, seq.input.num_classes, seq.scenario) for s, seq in by_scenario.items()}
    assert shapes == {"task": (5, 2, "task"), "domain": (1, 2, "domain"), "class": (1, 10, "class")}


def test_permuted_and_paper_sequences_are_domain_incremental_by_construction():
    assert load_sequence("permuted-digits").scenario == "domain"
    assert load_sequence("permuted-digits", DataOptions(scenario="domain")).input.heads == 1
    for scenario in ("task", "class"):
        with pytest.raises(UserError, match="domain-incremental by construction"):
            load_sequence("permuted-digits", DataOptions(scenario=scenario))
    with pytest.raises(UserError, match="unknown scenario 'tasks'"):
        load_sequence("split-digits", DataOptions(scenario="tasks"))


class HeadLog:
    """Which head and mask the output layer has whenever the engine evaluates or trains."""

    def __init__(self):
        self.evaluated, self.trained = [], []

    def install(self, layer):
        original = layer.forward

        def forward(h):
            log = self.trained if layer.training else self.evaluated
            if isinstance(layer, OutputHeads):
                log.append((layer.active, None, ()))
            else:
                visible = tuple((layer.mask == 0).nonzero().flatten().tolist())
                log.append((None, layer.masked, visible))
            return original(h)

        layer.forward = forward


def _run_logging_heads(monkeypatch, scenario, method="sgd"):
    log = HeadLog()
    install = scenarios.install

    def spy(model, sequence):
        heads = install(model, sequence)
        if heads is not None:
            log.install(heads)
        return heads

    monkeypatch.setattr(scenarios, "install", spy)
    result = run(RunConfig(sequence="split-digits", method=method, scenario=scenario, epochs=1,
                           eval_splits=("test",), method_params={"lr": 0.1}))
    return result, log


def test_task_incremental_trains_and_evaluates_each_task_with_its_own_head(monkeypatch):
    result, log = _run_logging_heads(monkeypatch, "task")
    # every training forward of task k ran head k, in order
    trained = [active for active, _, _ in log.trained]
    assert trained == sorted(trained) and set(trained) == {0, 1, 2, 3, 4}
    # evaluation after each task (and before the first) reads task j with head j
    evaluated = [active for active, _, _ in log.evaluated]
    assert evaluated == [0, 1, 2, 3, 4] * 6
    assert result.accuracy["test"][-1][0] > 0.9  # task 1's head untouched by later tasks


def test_task_incremental_heads_of_other_tasks_never_move(monkeypatch):
    captured = {}

    class Watch:
        def on_run_start(self, config, sequence, model, method):
            captured["heads"] = next(m for m in model.modules() if isinstance(m, OutputHeads))
            captured["start"] = [h.weight.detach().clone() for h in captured["heads"].heads]

        def on_step(self, event):
            pass

        def on_task_end(self, event):
            captured.setdefault("ends", []).append(
                [h.weight.detach().clone() for h in captured["heads"].heads])

        def on_run_end(self, result):
            pass

    run(RunConfig(sequence="split-digits", method="adam", scenario="task", epochs=1,
                  eval_splits=("test",)), [Watch()])
    ends = captured["ends"]
    for k in range(5):
        assert not torch.equal(ends[k][k], (ends[k - 1] if k else captured["start"])[k])  # trained
        for later in range(k + 1, 5):  # untouched after its task (Adam has no state for it)
            assert torch.equal(ends[later][k], ends[k][k])


def test_class_incremental_trains_on_the_classes_seen_so_far_and_evaluates_every_output(monkeypatch):
    result, log = _run_logging_heads(monkeypatch, "class")
    masks = [visible for _, masked, visible in log.trained if masked]
    assert len(masks) == len(log.trained)
    assert masks[0] == (0, 1) and masks[-1] == tuple(range(10))
    assert sorted(set(masks), key=len) == [tuple(range(2 * k)) for k in range(1, 6)]
    assert all(not masked for _, masked, _ in log.evaluated)


def test_domain_incremental_keeps_the_model_as_built(monkeypatch):
    result, log = _run_logging_heads(monkeypatch, "domain")
    assert log.trained == [] and log.evaluated == []  # no output layer of its own at all
    assert result.num_parameters == 64 * 256 + 256 + 256 * 256 + 256 + 256 * 2 + 2


def test_class_incremental_keeps_the_model_s_parameters_their_names_and_initialisation():
    from classp.models import build_model

    sequence = load_sequence("split-digits", DataOptions(scenario="class"))
    torch.manual_seed(3)
    plain = build_model("mlp", sequence.input)
    torch.manual_seed(3)
    model = build_model("mlp", sequence.input)
    layer = scenarios.install(model, sequence)
    assert isinstance(layer, ActiveOutputs) and isinstance(model.net[5], ActiveOutputs)
    named, plain_named = dict(model.named_parameters()), dict(plain.named_parameters())
    assert list(named) == list(plain_named)  # net.5.weight, not net.5.heads.0.weight
    for name, p in named.items():
        assert torch.equal(p, plain_named[name])
    assert torch.equal(torch.rand(3), (torch.manual_seed(3), build_model("mlp", sequence.input),
                                       torch.rand(3))[2])  # no draw from the seeded stream


def test_the_scenario_is_logged_with_the_run_settings():
    from classp.run_config import resolved_settings

    sequence = load_sequence("split-digits", DataOptions(scenario="task"))
    settings = resolved_settings(RunConfig(sequence="split-digits", scenario="task"), sequence)
    assert settings["scenario"] == "task"
    assert resolved_settings(RunConfig(sequence="permuted-digits"),
                             load_sequence("permuted-digits"))["scenario"] == "domain"


def test_joint_training_with_a_head_per_task_routes_each_sample_to_its_head():
    heads = OutputHeads(torch.nn.Linear(3, 2), 3)
    h = torch.randn(4, 3)
    heads.sample_tasks = torch.tensor([2, 0, 1, 2])
    out = heads(h)
    for i, k in enumerate([2, 0, 1, 2]):
        assert torch.allclose(out[i], heads.heads[k](h[i]))
    result = run(RunConfig(sequence="split-digits", method="joint", scenario="task", epochs=2,
                           eval_splits=("test",), method_params={"lr": 0.1}))
    assert result.status == "finished" and result.metrics["test"]["acc"] > 0.9
