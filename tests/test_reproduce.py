"""`classp reproduce`: the specs hold the paper's settings; the table and the runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from mlflow import MlflowClient

from classp.errors import UserError
from classp.reproduce import load_reproduce_spec, stage_mnist_stand_in
from support import make_mnist_like, run_classp

REPO = Path(__file__).resolve().parents[1]
TABLE1 = REPO / "studies" / "paper-table1.toml"
TABLE2 = REPO / "studies" / "paper-table2.toml"


def test_table1_rows_hold_the_paper_s_settings():
    spec = load_reproduce_spec(TABLE1)
    assert (spec.sequence, spec.seeds, spec.report_task) == ("mnist-fmnist", 10, "mnist")
    classp, no_threshold, adagrad, sgd, ewc = spec.rows
    assert classp.method == "classp" and classp.params["lr"] == 0.2
    assert classp.params["threshold"] == 0.5 and classp.params["power"] == 1.0
    assert classp.params["schedule"] == "paper"  # decay on the second task only
    assert (classp.paper_mean, classp.paper_std) == (91.05, 1.94)
    assert no_threshold.params["threshold"] == 0.0 and no_threshold.params["lr"] == 0.2
    assert adagrad.params["power"] == 2.0 and adagrad.params["decay"] is True
    assert adagrad.params["schedule"] == "constant"  # decay on both tasks
    assert (sgd.method, sgd.paper_mean) == ("sgd", 43.18)
    assert (ewc.method, ewc.paper_mean) == ("ewc", 68.52)
    assert "ewc_lambda" in ewc.assumed  # the paper does not give it, and the table says so


def test_table2_rows_hold_the_paper_s_settings():
    spec = load_reproduce_spec(TABLE2)
    assert (spec.sequence, spec.seeds, spec.report_task) == ("fpb-imdb", 10, "fpb")
    methods = [r.method for r in spec.rows]
    assert methods == ["classp", "classp", "classp", "sgd", "adam", "ewc"]
    classp = spec.rows[0]
    assert (classp.params["lr"], classp.params["threshold"], classp.params["power"]) == (0.025, 0.99, 1.0)
    assert spec.rows[2].params["power"] == 2.0
    assert all(r.paper_mean is None for r in spec.rows)  # not known here: never guessed


def test_the_mnist_stand_in_keeps_a_held_out_test_set(tmp_path):
    source = tmp_path / "t10k"
    make_mnist_like(source, n_train=10, n_test=100, compress=True)
    root = stage_mnist_stand_in(source, tmp_path / "data", train_count=80)
    from torchvision.datasets import MNIST

    assert len(MNIST(str(root), train=True)) == 80 and len(MNIST(str(root), train=False)) == 20
    with pytest.raises(UserError, match="no MNIST test set in"):
        stage_mnist_stand_in(tmp_path / "empty", tmp_path / "x")


def test_reproduce_prints_the_table_and_tracks_every_row(vision_data_dir, classp_home):
    out = run_classp("reproduce", TABLE1, "--seeds", "1", "--subsample", "0.5",
                     "--data-dir", vision_data_dir)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("paper-table1: accuracy"))
    table = lines[start:]
    title, header, *rows = table
    assert "mean +- std over 1 seed(s)" in title and "subsample 0.5" in title
    assert header.split("  ")[0].strip() == "row"
    for column in ("paper (train)", "ours ref-code (train)", "ours algorithm (train)",
                   "ours ref-code (test)", "ours algorithm (test)"):
        assert column in header
    assert len(rows) == 5
    assert "91.05 +- 1.94" in rows[0] and "not known here" in rows[1] and "(no rule)" in rows[3]

    client = MlflowClient(f"sqlite:///{classp_home / 'mlflow.db'}")
    exp = client.get_experiment_by_name("mnist-fmnist")
    runs = client.search_runs([exp.experiment_id], "tags.`classp.kind` = 'reproduce'")
    spec = load_reproduce_spec(TABLE1)
    for row in spec.rows:
        mine = [r for r in runs if r.data.tags["classp.row"] == row.label]
        assert len(mine) == len(row.rules)  # one seed: one run per rule
        assert {r.data.tags["classp.rule"] for r in mine} == {rule or "-" for rule in row.rules}
        for r in mine:
            assert r.data.params["eval_train"] == "True"
            assert r.info.status in ("FINISHED", "FAILED")


def test_a_bad_reproduce_spec_is_one_line(tmp_path, classp_home):
    bad = tmp_path / "bad.toml"
    bad.write_text(TABLE1.read_text().replace('method = "sgd"', 'method = "lwf"'))
    out = run_classp("reproduce", bad)
    assert out.returncode == 2
    line, = out.stderr.strip().splitlines()
    assert line.startswith(f"classp: error: {bad}: rows[3].method: unknown method 'lwf'")


def test_idx_round_trip(tmp_path):
    from classp.reproduce import _read_idx, _write_idx

    array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    _write_idx(tmp_path / "a", array)
    assert np.array_equal(_read_idx(tmp_path / "a"), array)
