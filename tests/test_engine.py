"""The training loop: the accuracy matrix, determinism, divergence, observers."""

from __future__ import annotations

import copy

import pytest
import torch

from classp.data import load_sequence
from classp.engine import RunConfig, StopRun, run
from classp.errors import UserError


@pytest.fixture(scope="module")
def digits():
    return load_sequence("split-digits")


def test_the_accuracy_matrix_has_a_row_before_training_and_one_after_each_task(digits):
    result = run(RunConfig(method="sgd", method_params={"lr": 0.1}, epochs=1,
                           eval_splits=("val", "test"), eval_train=True), sequence=digits)
    assert set(result.accuracy) == {"val", "test", "train"}
    R = result.accuracy["test"]
    assert len(R) == 6 and all(len(row) == 5 for row in R)
    assert R[1][0] > 0.9  # task 1 learnt
    assert R[5][4] > 0.7 and R[5][0] < R[1][0]  # last task learnt, first one forgotten
    assert result.metrics["test"]["bwt"] < 0


def test_runs_are_deterministic_on_a_cpu(digits):
    config = RunConfig(method="classp", method_params={"lr": 0.05, "threshold": 1e-4},
                       epochs=1, seed=3)
    a, b = run(config, sequence=digits), run(config, sequence=digits)
    assert a.accuracy == b.accuracy


def test_a_non_finite_loss_ends_the_run_as_diverged_at_its_step(digits):
    broken = copy.deepcopy(digits)
    broken.tasks[1].train.x[0, 0, 0, 0] = float("nan")  # the first batch of task 2
    result = run(RunConfig(method="sgd", epochs=1, batch_size=32, shuffle=False), sequence=broken)
    steps_task1 = -(-len(digits.tasks[0].train) // 32)
    assert result.status == "diverged"
    assert result.diverged_at == {"step": steps_task1 + 1, "task": 1}
    assert len(result.accuracy["test"]) == 2  # R[0] and after task 1, nothing made up
    assert "test" not in result.metrics


class Counting:
    def __init__(self, stop_after_task=None):
        self.steps, self.tasks, self.started, self.ended = [], [], 0, None
        self.stop_after_task = stop_after_task

    def on_run_start(self, *args):
        self.started += 1

    def on_step(self, event):
        self.steps.append((event.step, event.steps_in_window, event.loss))

    def on_task_end(self, event):
        self.tasks.append(event.task_name)
        if event.task == self.stop_after_task:
            raise StopRun

    def on_run_end(self, result):
        self.ended = result.status


def test_observers_get_windows_of_steps_and_task_ends(digits):
    obs = Counting()
    result = run(RunConfig(method="sgd", epochs=1, log_every=4), [obs], sequence=digits)
    assert obs.started == 1 and obs.ended == "finished"
    assert obs.tasks == [t.name for t in digits.tasks]
    assert sum(n for _, n, _ in obs.steps) == result.steps  # every step in exactly one window
    assert all(torch.isfinite(torch.tensor(loss)) for *_, loss in obs.steps)


def test_an_observer_can_stop_the_run(digits):
    obs = Counting(stop_after_task=1)
    result = run(RunConfig(method="sgd", epochs=1), [obs], sequence=digits)
    assert result.status == "stopped" and len(result.accuracy["val"]) == 3


@pytest.mark.parametrize("config, message", [
    (RunConfig(epochs=0), "epochs must be positive integers"),
    (RunConfig(epochs=(1, 2)), "2 epoch counts given for 5 tasks"),
    (RunConfig(batch_size=0), "batch size must be a positive integer"),
    (RunConfig(method="nope"), "unknown method 'nope'; choose one of: classp, ewc"),
    (RunConfig(model="resnet"), "unknown model 'resnet'; choose one of: paper-cnn"),
    (RunConfig(model="paper-transformer"), "needs text tasks"),
])
def test_bad_configs_are_clear_errors(digits, config, message):
    with pytest.raises(UserError, match=message):
        run(config, sequence=digits)


def test_the_paper_cnn_trains_on_image_tasks(digits):
    result = run(RunConfig(method="classp", model="paper-cnn", epochs=1,
                           method_params={"lr": 0.05}), sequence=digits)
    assert result.num_parameters == 32 * 9 + 32 + 64 * 32 * 9 + 64 + 256 * 128 + 128 + 1290


def test_a_short_task_still_reports_enough_points(digits):
    counting = Counting()
    # one epoch of about 300 images in batches of 8: about 38 steps per task, under
    # 20 * log_every (25): the cadence drops so that each task gives at least 20 points
    result = run(RunConfig(method="sgd", epochs=1, batch_size=8, log_every=25), [counting],
                 sequence=digits)
    steps_per_task = -(-len(digits.tasks[0].train) // 8)
    first_task = [s for s in counting.steps if s[0] <= steps_per_task]
    assert len(first_task) >= min(20, steps_per_task)
    assert result.steps == sum(-(-len(t.train) // 8) for t in digits.tasks)


def test_logged_settings_are_what_the_run_used(digits):
    from classp.run_config import resolved_settings

    settings = resolved_settings(RunConfig(method="sgd"), digits)
    assert settings["model"] == "mlp" and settings["batch_size"] == 32
    assert settings["epochs"] == [5] * 5 and settings["num_tasks"] == 5
    assert None not in settings.values() and "data_dir" not in settings
