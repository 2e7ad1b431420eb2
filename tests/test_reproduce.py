"""`classp reproduce`: the specs hold the paper's settings and numbers; the table and the runs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient

from classp.engine import RunConfig, run
from classp.paper import TABLES
from classp.reproduce import load_reproduce_spec
from support import run_classp

REPO = Path(__file__).resolve().parents[1]
TABLE1 = REPO / "studies" / "paper-table1.toml"
TABLE2 = REPO / "studies" / "paper-table2.toml"
TINY = REPO / "tests" / "fixtures" / "tiny-reproduce.toml"
CELL = r"\d+\.\d\d ± \d+\.\d\d \[\d+\.\d\d, \d+\.\d\d\]"  # mean ± std [CI]


def test_every_published_number_of_both_tables_is_in_the_code():
    t1, t2 = TABLES["table1"], TABLES["table2"]
    assert t1["classp"].accuracy == {"mnist": (91.05, 1.94), "fmnist": (85.53, 0.83)}
    assert t1["classp-no-threshold"].accuracy == {"mnist": (80.56, 1.55), "fmnist": (85.76, 2.19)}
    assert t1["classp-adagrad"].accuracy == {"mnist": (66.10, 3.09), "fmnist": (81.69, 0.91)}
    assert t1["sgd"].accuracy == {"mnist": (43.18, 0.90), "fmnist": (85.16, 0.64)}
    assert t1["ewc"].accuracy == {"mnist": (68.52, 5.32), "fmnist": (82.48, 1.19)}
    assert t2["classp"].accuracy == {"fpb": (66.04, 3.85), "imdb": (85.74, 1.30)}
    assert t2["classp-no-threshold"].accuracy == {"fpb": (64.81, 6.63), "imdb": (85.48, 1.38)}
    assert t2["classp-adagrad"].accuracy == {"fpb": (52.95, 1.97), "imdb": (85.01, 2.53)}
    assert t2["sgd"].accuracy == {"fpb": (47.24, 5.57), "imdb": (85.67, 1.72)}
    assert t2["adam"].accuracy == {"fpb": (46.63, 3.72), "imdb": (85.66, 1.99)}
    assert t2["ewc"].accuracy == {"fpb": (52.46, 1.49), "imdb": (85.67, 1.15)}


def test_table1_rows_hold_the_published_settings():
    spec = load_reproduce_spec(TABLE1)
    assert (spec.sequence, spec.protocol, spec.seeds, spec.report_task) == ("mnist-fmnist", "paper", 10, "mnist")
    classp, no_threshold, adagrad, sgd, ewc, textbook = spec.rows
    assert [r.paper_row for r in spec.rows] == ["classp", "classp-no-threshold", "classp-adagrad",
                                                "sgd", "ewc", None]
    assert classp.params == {"lr": 0.2, "threshold": 0.5, "power": 1.0, "eps": 1e-5, "schedule": "published"}
    assert no_threshold.params["threshold"] == 0.0 and no_threshold.params["schedule"] == "published"
    assert adagrad.params["power"] == 2.0 and adagrad.params["decay"] is True
    assert adagrad.params["schedule"] == "constant"  # decay on both tasks
    assert sgd.params == {"lr": 0.2}
    assert ewc.params == {"lr": 0.25, "ewc_lambda": 5000.0, "variant": "published-vision"}
    assert all(not r.assumed for r in spec.rows[:5])  # the paper or its script states each
    assert textbook.assumed == ("lr", "ewc_lambda")


def test_table2_rows_hold_the_published_settings():
    spec = load_reproduce_spec(TABLE2)
    assert (spec.sequence, spec.protocol, spec.report_task) == ("fpb-imdb", "paper", "fpb")
    assert [r.method for r in spec.rows] == ["classp", "classp", "classp", "sgd", "adam", "ewc"]
    classp = spec.rows[0].params
    assert (classp["lr"], classp["threshold"], classp["power"], classp["eps"], classp["decay"]) == (
        0.025, 0.99, 1.0, 1e-4, True)
    assert spec.rows[4].params == {"lr": 0.0003}
    assert spec.rows[5].params["variant"] == "published-text" and spec.rows[5].assumed == ("lr",)


def test_reproduce_prints_four_columns_with_intervals_and_tracks_every_run(vision_data_dir, classp_home,
                                                                          tmp_path):
    out = run_classp("reproduce", TINY, "--data-dir", vision_data_dir)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("tiny-table1: accuracy"))
    pairs_at = lines.index("paired by seed (CLASSP minus the other row, percentage points):")
    title, legend, header, *rows = lines[start:pairs_at]
    pairs = lines[pairs_at + 1:]
    # CLASSP against SGD and each EWC row, on both evaluations, paired over the 2 seeds
    assert len(pairs) == 6 and all("2 paired seeds" in p or "diverged" in p for p in pairs), pairs
    assert [p.split(":")[0] for p in pairs[:2]] == ["as published", "honest"]
    assert "protocol paper, full data" in title
    assert "mean ± std [95% bootstrap CI of the mean] over 2 seed(s)" in legend
    for column in ("paper (n=10)", "ours as published", "ours as specified", "ours honest (test)",
                   "paper in CI?"):
        assert column in header
    classp, sgd, ewc, own = rows
    # every cell a number with its interval: a failed or diverged row fails this test
    assert re.search(rf"91\.05 ± 1\.94\s+{CELL}\s+{CELL}\s+{CELL}\s+(yes|no)$", classp), classp
    assert re.search(rf"43\.18 ± 0\.90\s+{CELL}\s+\(no rule: same runs\)\s+{CELL}\s+(yes|no)$", sgd), sgd
    assert re.search(rf"68\.52 ± 5\.32\s+{CELL}\s+\(no rule: same runs\)\s+{CELL}\s+(yes|no)$", ewc), ewc
    assert re.search(rf"\(not in the paper\)\s+{CELL}\s+\(no rule: same runs\)\s+{CELL}\s+-$", own), own
    assert "[assumed: lr, ewc_lambda]" in own

    client = MlflowClient(f"sqlite:///{classp_home / 'mlflow.db'}")
    exp = client.get_experiment_by_name("mnist-fmnist")
    runs = client.search_runs([exp.experiment_id], "tags.`classp.kind` = 'reproduce'")
    assert len(runs) == 2 * (2 + 1 + 1 + 1)  # seeds x (two rules for CLASSP, one otherwise)
    assert {r.info.status for r in runs} == {"FINISHED"}
    assert {r.data.params["protocol"] for r in runs} == {"paper"}

    # The same table, rebuilt from the printed runs split over two files (rows run in two
    # processes), with nothing run: the same rows, cells and comparisons.
    runs_printed = [line for line in lines[:start] if line.startswith("[")]
    first, second = tmp_path / "a.txt", tmp_path / "b.txt"
    first.write_text("\n".join(r for r in runs_printed if "| sgd" not in r.lower() and "SGD" not in r))
    second.write_text("noise before\n" + "\n".join(r for r in runs_printed if "SGD" in r))
    rebuilt = run_classp("reproduce", TINY, "--from-logs", first, second)
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert rebuilt.stdout.strip().splitlines()[2:] == lines[start + 2:]


def test_from_logs_names_a_row_the_spec_does_not_have(tmp_path, classp_home):
    log = tmp_path / "other.txt"
    log.write_text("[1/1] Some other row | - | seed 0: 50.00% (published eval), 60.00% (test) (1 s)\n")
    out = run_classp("reproduce", TINY, "--from-logs", log)
    assert out.returncode == 2
    line, = out.stderr.strip().splitlines()
    assert line == (f"classp: error: {log}: a run of row 'Some other row', which tiny-reproduce.toml "
                    f"does not have; give the spec the runs were made with")
    empty = tmp_path / "empty.txt"
    empty.write_text("nothing here\n")
    out = run_classp("reproduce", TINY, "--from-logs", empty)
    assert out.stderr.strip() == (f"classp: error: no run lines found in {empty}; give the output "
                                  f"that `classp reproduce` printed")


def test_the_published_code_runs_rows_1_and_2_identically(vision_data_dir):
    """Under the published CLASSP.py a threshold below 1 never masks: "threshold 0.5" and
    "without threshold" are one computation, so the README's tables run row 1 for both."""
    class Grab:
        def on_run_start(self, config, sequence, model, method):
            self.model = model

        def on_step(self, event):
            pass

        def on_task_end(self, event):
            pass

        def on_run_end(self, result):
            self.result = result

    finals = []
    for threshold in (0.5, 0.0):
        grab = Grab()
        config = RunConfig(sequence="mnist-fmnist", protocol="paper", method="classp",
                           method_params={"lr": 0.05, "threshold": threshold, "schedule": "published",
                                          "rule": "reference-code"},
                           data_dir=str(vision_data_dir), eval_splits=("test",), subsample=0.5)
        run(config, [grab])
        finals.append(([p.detach().clone() for p in grab.model.parameters()], grab.result))
    (w1, r1), (w2, r2) = finals
    assert all(torch.equal(a, b) for a, b in zip(w1, w2))
    assert r1.accuracy["test"] == r2.accuracy["test"]


@pytest.mark.parametrize("args, message", [
    (["--rows", "1,9"], "--rows: '9' is not a row number of tiny-reproduce.toml (1 to 4)"),
    (["--rules", "equation"], "--rules: unknown rule 'equation'"),
    (["--seeds", "0"], "--seeds must be at least 1, got 0"),
    (["--population", "0"], "--population must be at least 1 (1: one run at a time), got 0"),
])
def test_bad_reproduce_arguments_are_one_line(classp_home, args, message):
    out = run_classp("reproduce", TINY, *args)
    assert out.returncode == 2
    line, = out.stderr.strip().splitlines()
    assert line.startswith(f"classp: error: {message}")
    assert not (classp_home / "mlflow.db").exists()  # nothing was recorded


def test_a_bad_reproduce_spec_is_one_line(tmp_path, classp_home):
    bad = tmp_path / "bad.toml"
    bad.write_text(TABLE1.read_text().replace('method = "sgd"', 'method = "lwf"'))
    out = run_classp("reproduce", bad)
    assert out.returncode == 2
    line, = out.stderr.strip().splitlines()
    assert line.startswith(f"classp: error: {bad}: rows[3].method: unknown method 'lwf'")
    bad.write_text(TABLE1.read_text().replace('paper_row = "sgd"', 'paper_row = "adam"'))
    out = run_classp("reproduce", bad)
    assert "rows[3].paper_row: 'adam' is not a row of table1" in out.stderr


def test_reproduce_in_populations_prints_the_table_of_reproduce_one_by_one(vision_data_dir, tmp_path):
    """The paper's CNN, its channel dropout and its training-mode evaluation, two seeds a
    population: the table of the runs one by one, within float tolerance."""
    tables = []
    for population in ("1", "2"):
        uri = f"sqlite:///{tmp_path / population / 'mlflow.db'}"
        out = run_classp("reproduce", TINY, "--data-dir", vision_data_dir, "--population", population,
                         "--tracking-uri", uri, env={"CLASSP_HOME": str(tmp_path / population)})
        assert out.returncode == 0, out.stderr
        lines = out.stdout.strip().splitlines()
        tables.append(lines[next(i for i, line in enumerate(lines) if line.startswith("tiny-table1")):])
    alone, together = tables
    assert len(alone) == len(together)
    for a, b in zip(alone, together):
        # The same words; every number within a few training samples of 200.
        assert re.sub(r"-?\d+\.\d+", "#", a) == re.sub(r"-?\d+\.\d+", "#", b)
        numbers = [[float(t) for t in re.findall(r"-?\d+\.\d+", line)] for line in (a, b)]
        assert numbers[0] == pytest.approx(numbers[1], abs=2.0), (a, b)
