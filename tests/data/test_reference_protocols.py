"""The field's reference protocols (hsu2018, vandeven2022) on small MNIST-like data in the
real idx format: their pixels, networks, step counts and heads, and each scenario run
through the real command."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from classp.data import DataOptions, load_sequence
from classp.engine import RunConfig, run
from classp.errors import UserError
from support import run_classp


def _raw_images(folder, prefix="train"):
    data = (folder / "MNIST" / "raw" / f"{prefix}-images-idx3-ubyte").read_bytes()
    return np.frombuffer(data, dtype=np.uint8, offset=16).reshape(-1, 28, 28)


def test_hsu2018_pads_to_32x32_and_standardises_with_the_padded_statistics(vision_data_dir):
    sequence = load_sequence("split-mnist", DataOptions(data_dir=vision_data_dir, protocol="hsu2018",
                                                        scenario="class"))
    raw = _raw_images(vision_data_dir, "t10k")
    labels = np.frombuffer((vision_data_dir / "MNIST" / "raw" / "t10k-labels-idx1-ubyte").read_bytes(),
                           dtype=np.uint8, offset=8)
    task = sequence.tasks[0]
    assert task.test.x.shape[1:] == (1, 32, 32)
    first = raw[np.isin(labels, [0, 1])][0]
    expected = np.pad(first / 255.0, 2)  # two zero pixels on every side, then standardised
    torch.testing.assert_close(task.test.x[0, 0], torch.tensor((expected - 0.1) / 0.2752,
                                                               dtype=torch.float32))
    p = sequence.protocol
    assert (p.name, p.epochs, p.batch_size, p.shuffle, p.model) == ("hsu2018", (4,) * 5, 128, True, "mlp-400")
    # the whole training set, no validation carved out; the test set reported
    assert sum(len(t.train) for t in sequence.tasks) == 200 and all(len(t.val) == 0 for t in sequence.tasks)
    assert sequence.input.shape == (1, 32, 32)


def test_vandeven2022_counts_iterations_and_keeps_pixels_in_unit_range(vision_data_dir):
    split = load_sequence("split-mnist", DataOptions(data_dir=vision_data_dir, protocol="vandeven2022"))
    assert split.protocol.iterations == (2000,) * 5 and split.protocol.model == "mlp-400"
    assert split.input.shape == (1, 28, 28) and float(split.tasks[0].train.x.min()) == 0.0
    assert float(split.tasks[0].train.x.max()) <= 1.0
    permuted = load_sequence("permuted-mnist", DataOptions(data_dir=vision_data_dir,
                                                           protocol="vandeven2022"))
    assert len(permuted.tasks) == 10 and permuted.input.shape == (1, 32, 32)
    assert permuted.protocol.iterations == (5000,) * 10 and permuted.protocol.model == "mlp-1000"
    with pytest.raises(UserError, match="protocol 'hsu2018' exists for the sequences it was "
                                        "published for only \\(split-mnist\\)"):
        load_sequence("permuted-mnist", DataOptions(data_dir=vision_data_dir, protocol="hsu2018"))


def test_an_iteration_protocol_trains_exactly_its_steps_per_task(vision_data_dir):
    sequence = load_sequence("split-mnist", DataOptions(data_dir=vision_data_dir, protocol="vandeven2022"))
    from dataclasses import replace

    # 7 steps per task over tasks of about 40 samples in batches of 16: passes end mid-epoch
    sequence = replace(sequence, protocol=replace(sequence.protocol, iterations=(7,) * 5, batch_size=16))
    result = run(RunConfig(sequence="split-mnist", method="adam", protocol="vandeven2022",
                           eval_splits=("test",)), sequence=sequence)
    assert result.status == "finished" and result.steps == 35


@pytest.mark.parametrize("scenario, heads, units", [("task", 5, 2), ("domain", 1, 2), ("class", 1, 10)])
def test_the_command_runs_each_scenario_under_the_hsu2018_protocol(vision_data_dir, scenario, heads, units):
    done = run_classp("run", "--sequence", "split-mnist", "--scenario", scenario, "--protocol",
                      "hsu2018", "--method", "sgd", "--epochs", "1", "--data-dir", vision_data_dir,
                      "--json", "--no-progress")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    hidden = 1024 * 400 + 400 + 400 * 400 + 400
    assert result["num_parameters"] == hidden + heads * (400 * units + units)
    assert result["config"]["scenario"] == scenario
    assert len(result["accuracy"]["test"]) == 6 and "val" not in result["accuracy"]


def test_a_scenario_the_sequence_cannot_take_is_one_line(vision_data_dir):
    done = run_classp("run", "--sequence", "permuted-digits", "--scenario", "task")
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert "domain-incremental by construction" in done.stderr


@pytest.mark.parametrize("name, opts", [
    ("split-digits", DataOptions()), ("permuted-digits", DataOptions()),
    ("permuted-digits", DataOptions(num_tasks=3)),
])
def test_task_count_is_known_without_loading_the_data(name, opts):
    from classp.data import task_count

    assert task_count(name, opts) == len(load_sequence(name, opts).tasks)
    assert task_count("permuted-mnist", DataOptions(protocol="vandeven2022")) == 10
    assert task_count("mnist-fmnist") == 2
