"""Every registered method runs on every kind of sequence (images and tokens) for a few
steps: a method is tested the day it is registered."""

from __future__ import annotations

import csv

import pytest

from classp.data import DataOptions, load_sequence
from classp.engine import RunConfig, run
from classp.methods import METHODS


@pytest.fixture(scope="module")
def sequences(tmp_path_factory):
    folder = tmp_path_factory.mktemp("text")
    words = "profit fell rose market shares good bad film".split()
    for name, n, classes in (("financial_phrasebank", 24, 3), ("imdb", 16, 2)):
        with open(folder / f"{name}.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["text", "label"])
            writer.writerows((" ".join(words[(i + j) % 8] for j in range(3 + i % 5)), i % classes)
                             for i in range(n))
    return {"image": load_sequence("split-digits", DataOptions(subsample=0.1)),
            "tokens": load_sequence("fpb-imdb", DataOptions(data_dir=folder))}


@pytest.mark.parametrize("kind", ["image", "tokens"])
@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_runs_on_every_kind_of_sequence(sequences, method, kind):
    sequence = sequences[kind]
    params = {"lr": 0.01} if "lr" in METHODS[method].defaults else {}
    config = RunConfig(sequence=sequence.name, method=method, method_params=params, epochs=1,
                       batch_size=8, track_updates=True)
    result = run(config, sequence=sequence)
    assert result.status == "finished"
    T = len(sequence.tasks)
    assert result.steps > 0 and len(result.accuracy["test"]) == T + 1
    assert all(0.0 <= a <= 1.0 for row in result.accuracy["test"] for a in row)
