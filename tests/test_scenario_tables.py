"""`classp reproduce` for the field's tables (rows x scenarios): the spec holds Hsu et al.'s
published settings and numbers; a small table runs for real; the table is rebuilt from
printed runs; bad specs are one line."""

from __future__ import annotations

import re

import pytest
from mlflow import MlflowClient

from classp.errors import UserError
from classp.literature import HSU2018_SPLIT_MNIST
from classp.scenario_tables import load_scenario_table_spec
from classp.tomlfile import read_spec
from support import REPO, run_classp

HSU = REPO / "studies" / "hsu2018-split-mnist.toml"


def _spec(path=HSU):
    return load_scenario_table_spec(read_spec(path, "reproduce spec", "x"))


def test_every_published_number_of_hsu_s_split_mnist_table_is_in_the_code():
    rows = HSU2018_SPLIT_MNIST.rows
    assert rows["adam"] == {"task": (93.46, 2.01), "domain": (55.16, 1.38), "class": (19.71, 0.08)}
    assert rows["sgd"] == {"task": (97.98, 0.09), "domain": (63.20, 0.35), "class": (19.46, 0.04)}
    assert rows["adagrad"] == {"task": (98.06, 0.53), "domain": (58.08, 1.06), "class": (19.82, 0.09)}
    assert rows["l2"] == {"task": (98.18, 0.96), "domain": (66.00, 3.73), "class": (22.52, 1.08)}
    assert rows["ewc"] == {"task": (97.70, 0.81), "domain": (58.85, 2.59), "class": (19.80, 0.05)}
    assert rows["online-ewc"] == {"task": (98.04, 1.10), "domain": (57.33, 1.44), "class": (19.77, 0.04)}
    assert rows["si"] == {"task": (98.56, 0.49), "domain": (64.76, 3.09), "class": (19.67, 0.09)}
    assert rows["offline"] == {"task": (99.52, 0.16), "domain": (98.59, 0.15), "class": (97.53, 0.30)}


def test_the_spec_holds_hsu_s_published_settings():
    spec = _spec()
    assert (spec.sequence, spec.protocol, spec.seeds, spec.scenarios) == (
        "split-mnist", "hsu2018", 10, ("task", "domain", "class"))
    by_row = {r.paper_row: r for r in spec.rows}  # the last offline row: theirs exactly
    assert set(by_row) == set(HSU2018_SPLIT_MNIST.rows)
    assert [r.paper_row for r in spec.rows].count("offline") == 2
    growing, final = (r for r in spec.rows if r.paper_row == "offline")
    assert (growing.params.get("union", "growing"), final.params["union"]) == ("growing", "final")
    assert by_row["adam"].params == {"lr": 0.001}
    assert by_row["sgd"].params == {"lr": 0.01} and by_row["adagrad"].params == {"lr": 0.01}
    for row in ("l2", "ewc", "online-ewc", "si", "offline"):
        assert by_row[row].params["optimizer"] == "adam" and by_row[row].params["lr"] == 0.001
    # their coefficient c is our lambda = 2c where our penalty has the 1/2 (EWC, L2); SI's is c
    lam = {s: by_row["ewc"].params_for(s)["ewc_lambda"] / 2 for s in spec.scenarios}
    assert lam == {"task": 100, "domain": 100, "class": 600}
    online = {s: by_row["online-ewc"].params_for(s)["ewc_lambda"] / 2 for s in spec.scenarios}
    assert online == {"task": 400, "domain": 700, "class": 100}
    assert by_row["online-ewc"].params["mode"] == "online" and by_row["online-ewc"].params["gamma"] == 1.0
    assert {s: by_row["si"].params_for(s)["c"] for s in spec.scenarios} == {
        "task": 300, "domain": 3000, "class": 600}
    assert by_row["si"].params["xi"] == 0.1
    assert {s: by_row["l2"].params_for(s)["l2_lambda"] / 2 for s in spec.scenarios} == {
        "task": 0.01, "domain": 0.5, "class": 100}
    for row in ("ewc", "online-ewc"):  # the Fisher at the predicted label, over the whole task
        assert by_row[row].params["fisher"] == "predicted"
        assert by_row[row].params["fisher_samples"] >= 60000


SMALL = """
[reproduce]
name = "tiny-hsu"
table = "hsu2018-split-mnist"
seeds = 2
scenarios = ["task", "class"]

[[rows]]
paper_row = "sgd"
label = "SGD"
method = "sgd"
params = { lr = 0.05 }

[[rows]]
label = "L2 (ours)"
method = "l2"
params = { lr = 0.05 }
[rows.scenario_params]
task = { l2_lambda = 1.0 }
class = { l2_lambda = 10.0 }
"""


def test_a_small_table_runs_tracks_every_run_and_rebuilds_from_its_output(tmp_path, vision_data_dir):
    spec = tmp_path / "tiny.toml"
    spec.write_text(SMALL)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    done = run_classp("reproduce", spec, "--data-dir", vision_data_dir, "--subsample", "0.5",
                      "--tracking-uri", uri, env={"CLASSP_HOME": str(tmp_path / "home")})
    assert done.returncode == 0, done.stderr
    out = done.stdout
    runs = [line for line in out.splitlines() if line.startswith("[")]
    assert len(runs) == 2 * 2 * 2 and runs[-1].startswith("[8/8] L2 (ours) | class | seed 1: ")
    table = out[out.index("tiny-hsu: ACC"):]
    assert "protocol hsu2018, subsample 0.5 of every split" in table
    lines = {tuple(re.split(r"\s{2,}", line)[:2]): line for line in table.splitlines()[4:]}
    assert set(lines) == {("SGD", "task"), ("L2 (ours)", "task"), ("SGD", "class"), ("L2 (ours)", "class")}
    assert "97.98 ± 0.09" in lines[("SGD", "task")] and "19.46 ± 0.04" in lines[("SGD", "class")]
    assert "(not in the paper)" in lines[("L2 (ours)", "task")]
    assert re.search(r"\d+\.\d\d ± \d+\.\d\d \[\d+\.\d\d, \d+\.\d\d\]\s+(yes|no)\s+"
                     r"[+-]\d+\.\d\d \[[+-]\d+\.\d\d, [+-]\d+\.\d\d\]$", lines[("SGD", "class")])
    # every run tracked: a child run per row, scenario and seed, tagged with its scenario
    client = MlflowClient(uri)
    children = client.search_runs([e.experiment_id for e in client.search_experiments()],
                                  "tags.`classp.kind` = 'reproduce'")
    assert sorted(r.data.tags["classp.scenario"] for r in children) == ["class"] * 4 + ["task"] * 4
    assert {r.data.params["scenario"] for r in children} == {"task", "class"}
    # the same table from the printed runs
    log = tmp_path / "out.txt"
    log.write_text(out)
    again = run_classp("reproduce", spec, "--from-logs", log)
    assert again.returncode == 0, again.stderr
    rebuilt = again.stdout.strip().splitlines()
    assert rebuilt[1:] == table.strip().splitlines()[1:]  # the title says where it came from


def test_seeds_in_populations_give_the_table_of_seeds_one_by_one(tmp_path, vision_data_dir):
    spec = tmp_path / "tiny.toml"
    spec.write_text(SMALL)
    tables = []
    for population in ("1", "2"):
        done = run_classp("reproduce", spec, "--data-dir", vision_data_dir, "--subsample", "0.5",
                          "--population", population, "--rows", "1",
                          env={"CLASSP_HOME": str(tmp_path / f"home{population}")})
        assert done.returncode == 0, done.stderr
        tables.append(done.stdout[done.stdout.index("tiny-hsu: ACC"):].splitlines())
    alone, together = tables
    assert len(alone) == len(together)
    for a, b in zip(alone, together):
        assert re.sub(r"-?\d+\.\d+", "#", a) == re.sub(r"-?\d+\.\d+", "#", b)
        numbers = [[float(v) for v in re.findall(r"-?\d+\.\d+", line)] for line in (a, b)]
        assert numbers[0] == pytest.approx(numbers[1], abs=0.5)


@pytest.mark.parametrize("edit, message", [
    (lambda s: s.replace('table = "hsu2018-split-mnist"', 'table = "hsu2019"'), "unknown table 'hsu2019'"),
    (lambda s: s.replace('scenarios = ["task", "class"]', 'scenarios = ["tasks"]'),
     "reproduce.scenarios: unknown scenario 'tasks'"),
    (lambda s: s.replace('task = { l2_lambda = 1.0 }', 'domain = { l2_lambda = 1.0 }'),
     r"rows\[1\].scenario_params.domain: unknown key"),
    (lambda s: s.replace('class = { l2_lambda = 10.0 }', 'class = { l2_lambda = -1.0 }'),
     r"rows\[1\].params: class: l2_lambda must be >= 0"),
    (lambda s: s.replace('paper_row = "sgd"', 'paper_row = "sgdm"'), "'sgdm' is not a row of"),
    (lambda s: s.replace('label = "L2 (ours)"', 'label = "SGD"'), "two rows share a label"),
    (lambda s: s.replace('seeds = 2', 'seeds = 2\nprotocol = "study"'),
     "was published on split-mnist under protocol 'hsu2018'"),
])
def test_a_bad_table_spec_is_one_line_naming_the_key(tmp_path, edit, message):
    spec = tmp_path / "bad.toml"
    spec.write_text(edit(SMALL))
    with pytest.raises(UserError, match=message):
        _spec(spec)
    home = tmp_path / "home"
    done = run_classp("reproduce", spec, "--seeds", "1", env={"CLASSP_HOME": str(home)})
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert not home.exists()  # refused before any store or run was made


def test_from_logs_refuses_runs_of_another_spec_and_files_without_runs(tmp_path):
    spec = tmp_path / "tiny.toml"
    spec.write_text(SMALL)
    other = tmp_path / "other.txt"
    other.write_text("[1/1] Adam | task | seed 0: 98.00% (ACC, test) (1 s)\n")
    done = run_classp("reproduce", spec, "--from-logs", other)
    assert done.returncode == 2 and "a run of 'Adam' in scenario 'task'" in done.stderr
    empty = tmp_path / "empty.txt"
    empty.write_text("nothing here\n")
    done = run_classp("reproduce", spec, "--from-logs", empty)
    assert done.returncode == 2 and "no run lines found" in done.stderr
    binary = tmp_path / "binary.txt"
    binary.write_bytes(b"\xff\xfe\x00")
    done = run_classp("reproduce", spec, "--from-logs", binary)
    assert done.returncode == 2 and "not a UTF-8 text file (binary data?)" in done.stderr


def test_scenario_flags_belong_to_their_kind_of_table(tmp_path):
    home = {"CLASSP_HOME": str(tmp_path / "home")}
    done = run_classp("reproduce", REPO / "studies" / "paper-table1.toml", "--scenarios", "task",
                      "--from-logs", HSU, env=home)
    assert done.returncode == 2 and "--scenarios is for the field's tables" in done.stderr
    done = run_classp("reproduce", HSU, "--rules", "algorithm", "--seeds", "1", env=home)
    assert done.returncode == 2 and "--rules is for the CLASSP paper's tables" in done.stderr
    done = run_classp("reproduce", HSU, "--scenarios", "class,tasks", "--seeds", "1", env=home)
    assert done.returncode == 2 and "--scenarios: 'tasks' is not a scenario" in done.stderr
    assert not (tmp_path / "home").exists()  # nothing written for any of them
