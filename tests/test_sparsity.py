"""Sparsity numbers on hand-made inputs with known answers: the histogram's bins, the
per-task deltas of the update counts, the per-window share of unchanged weights, and the
counter itself."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from mlflow import MlflowClient

from classp.engine import StepEvent, TaskEndEvent
from classp.sparsity import UpdateCounter, update_histogram
from classp.tracking import RunLogger


def test_a_short_task_gives_every_count_its_own_bin():
    h = update_histogram(torch.tensor([0.0, 0.0, 1.0, 2.0, 2.0, 2.0]), steps=2)
    assert h["edges"] == [-0.5, 0.5, 1.5, 2.5]
    assert h["counts"] == [2, 1, 3]
    assert h["numel"] == 6 and h["steps"] == 2


def test_a_long_task_gets_even_bins_from_zero_to_its_steps():
    h = update_histogram(torch.tensor([0.0, 4.0, 5.0, 50.0, 99.0, 100.0]), steps=100, bins=20)
    assert h["edges"][:3] == [0.0, 5.0, 10.0] and h["edges"][-1] == 100.0
    expected = [0] * 20
    expected[0] = 2  # 0 and 4
    expected[1] = 1  # 5 opens the second bin
    expected[10] = 1  # 50
    expected[19] = 2  # 99 and 100: the last bin is closed on the right
    assert h["counts"] == expected
    assert sum(h["counts"]) == h["numel"] == 6


@dataclass
class HandCounts:
    """An update counter whose counts the test sets (names, sizes, cumulative counts)."""

    values: dict

    @property
    def names(self):
        return list(self.values)

    def sizes(self):
        return [v.numel() for v in self.values.values()]

    def counts(self):
        return self.values

    def totals(self):
        return torch.stack([v.sum() for v in self.values.values()])


@pytest.fixture
def logger(tmp_path):
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.create_experiment("sparsity", artifact_location=(tmp_path / "a").as_uri())
    run_id = client.create_run(experiment).info.run_id
    return RunLogger(client, run_id), client, run_id


def _task_end(task, steps, counts):
    return TaskEndEvent(task=task, task_name=f"t{task}", step=0, accuracy={}, optimizer=None,
                        model=None, updates=counts, steps_in_task=steps)


def test_each_task_histogram_counts_only_that_task_s_updates(logger):
    log, _, _ = logger
    # cumulative counts after task 1 (4 steps) and after task 2 (2 more steps)
    log.on_task_end(_task_end(0, 4, HandCounts({"w": torch.tensor([0.0, 4.0, 2.0])})))
    log.on_task_end(_task_end(1, 2, HandCounts({"w": torch.tensor([2.0, 4.0, 3.0])})))
    first, second = (h["params"]["w"] for h in log.histograms)
    assert first["counts"] == [1, 0, 1, 0, 1]  # 0, 2 and 4 updates out of 4 steps
    assert second["counts"] == [1, 1, 1]  # deltas 2, 0, 1 out of 2 steps
    assert [h["steps"] for h in log.histograms] == [4, 2]


def _step_event(step, steps_in_window, counts):
    return StepEvent(step=step, task=0, epoch=0, loss=1.0, accuracy=0.5,
                     steps_in_window=steps_in_window, optimizer=None, model=None, updates=counts)


def test_the_share_of_unchanged_weights_is_per_window(logger):
    log, client, run_id = logger
    # 4 weights; window 1 (5 steps): 10 of 20 weight-steps moved; window 2 (5 steps): 5 more
    log.on_step(_step_event(5, 5, HandCounts({"w": torch.tensor([5.0, 5.0, 0.0, 0.0])})))
    log.on_step(_step_event(10, 5, HandCounts({"w": torch.tensor([5.0, 5.0, 5.0, 0.0])})))
    log.flush()
    history = client.get_metric_history(run_id, "sparsity/all")
    assert [(m.step, m.value) for m in sorted(history, key=lambda m: m.step)] == [(5, 0.5), (10, 0.75)]


def test_each_parameter_s_share_of_unchanged_weights_is_logged_per_task(logger):
    log, client, run_id = logger
    # task 1, 4 steps: w moved 0 + 4 + 2 = 6 of 12 weight-steps; task 2, 2 steps: 3 of 6
    first = _task_end(0, 4, HandCounts({"w": torch.tensor([0.0, 4.0, 2.0])}))
    second = _task_end(1, 2, HandCounts({"w": torch.tensor([2.0, 4.0, 3.0])}))
    first.step, second.step = 4, 6
    log.on_task_end(first)
    log.on_task_end(second)
    history = client.get_metric_history(run_id, "sparsity/w")
    assert [(m.step, m.value) for m in sorted(history, key=lambda m: m.step)] == [(4, 0.5), (6, 0.5)]


def test_the_counter_counts_the_steps_that_moved_each_weight():
    w = torch.nn.Parameter(torch.zeros(3))
    optimizer = torch.optim.SGD([w], lr=1.0)
    counter = UpdateCounter([("w", w)], optimizer)
    for grad in ([1.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0]):
        w.grad = torch.tensor(grad)
        optimizer.step()
        counter.after_step()
    assert counter.counts()["w"].tolist() == [2.0, 0.0, 1.0]
