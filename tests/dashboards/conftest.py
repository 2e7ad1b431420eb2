"""Runs with known numbers, for the dashboards to read: held in memory for the panels'
numbers, and written into a real MLflow store through the platform's own tracking code for
the page (a test checks both give the same records)."""

from __future__ import annotations

import pytest

from classp.dashboards.runs import ExperimentRuns, RunRecord
from classp.tracking import TAG_KIND, TAG_METHOD, TAG_TRIAL, Tracking

TASKS = ["a", "b"]
# method -> per confirmation seed: final test accuracy on task a, task b
CONFIRM = {"classp": [(0.90, 0.70), (0.80, 0.90)], "ewc": [(0.60, 0.80), (0.40, 1.00)]}
# method -> per trial: (old-task val accuracy, new-task val accuracy, objective)
TRIALS = {"classp": [(0.5, 0.9, 0.70), (0.8, 0.6, 0.70), (0.4, 0.5, 0.45)],
          "ewc": [(0.3, 0.95, 0.625), (0.2, 0.9, 0.55)]}


def _matrix(a: float, b: float) -> list[list[float]]:
    return [[0.1, 0.1], [1.0, 0.2], [a, b]]


def _histograms(moved_share: float) -> dict:
    # 10 weights, a task of 4 steps; `moved_share` of them moved in every step
    moving = round(10 * moved_share)
    h = {"edges": [-0.5, 0.5, 1.5, 2.5, 3.5, 4.5], "counts": [10 - moving, 0, 0, 0, moving],
         "numel": 10, "steps": 4}
    return {"tasks": [{"task": 1, "task_name": "a", "steps": 4, "params": {"w": h}}]}


def _confirm_metrics(method: str, a: float, b: float) -> dict[str, float]:
    return {"test.final_acc_task1": a, "test.final_acc_task2": b, "test.acc": (a + b) / 2,
            "test.bwt": a - 1.0, "test.forgetting": 1.0 - a,
            "state_bytes": 4000.0 if method == "classp" else 8000.0}


def _trial_metrics(old: float, new: float, objective: float) -> dict[str, float]:
    return {"val.final_acc_task1": old, "val.final_acc_task2": new,
            "objective.val_accuracy": objective, "state_bytes": 1.0}


def in_memory_experiment() -> ExperimentRuns:
    """The runs `tracked` writes, as the records `load_experiment` reads back (run ids
    made up), with their artifacts in a dict."""
    runs, artifacts = [], {}
    for method, seeds in CONFIRM.items():
        runs.append(RunRecord(f"{method}-study", "study", method, "running"))  # never ended here
        for i, (a, b) in enumerate(seeds):
            run_id = f"{method}-confirm-{i}"
            runs.append(RunRecord(run_id, "confirm", method, "finished", _confirm_metrics(method, a, b),
                                  {"tasks": ",".join(TASKS), "confirm_seed": str(1000 + i)}))
            artifacts[run_id, "accuracy_matrix.json"] = {"tasks": TASKS, "splits": {"test": _matrix(a, b)}}
        for number, (old, new, objective) in enumerate(TRIALS[method]):
            run_id = f"{method}-trial-{number}"
            runs.append(RunRecord(run_id, "trial", method, "finished", _trial_metrics(old, new, objective),
                                  trial=number))
            artifacts[run_id, "sparsity/update_histograms.json"] = _histograms(
                0.3 if method == "classp" else 1.0)
        runs.append(RunRecord(f"{method}-pruned", "trial", method, "pruned", trial=99))
    return ExperimentRuns("split-digits", runs, lambda run_id, path: artifacts.get((run_id, path)))


@pytest.fixture
def exp() -> ExperimentRuns:
    return in_memory_experiment()


@pytest.fixture
def tracked(classp_home):
    """A local store with confirmation and trial runs for classp and ewc on split-digits."""
    tr = Tracking()
    exp = tr.experiment("split-digits")
    for method, seeds in CONFIRM.items():
        parent = tr.parent_run(exp, f"t.{method}", {TAG_METHOD: method})
        for i, (a, b) in enumerate(seeds):
            run_id = tr.child_run(exp, parent, f"confirm-{i}", {TAG_KIND: "confirm", TAG_METHOD: method})
            R = _matrix(a, b)
            for key, value in _confirm_metrics(method, a, b).items():
                tr.client.log_metric(run_id, key, value)
            tr.client.log_param(run_id, "tasks", ",".join(TASKS))
            tr.client.log_param(run_id, "confirm_seed", 1000 + i)
            tr.client.log_dict(run_id, {"tasks": TASKS, "splits": {"test": R}}, "accuracy_matrix.json")
            tr.finish(run_id, "finished")
        for number, (old, new, objective) in enumerate(TRIALS[method]):
            run_id = tr.child_run(exp, parent, f"trial-{number}", {
                TAG_KIND: "trial", TAG_METHOD: method, TAG_TRIAL: str(number)})
            for key, value in _trial_metrics(old, new, objective).items():
                tr.client.log_metric(run_id, key, value)
            tr.client.log_dict(run_id, _histograms(0.3 if method == "classp" else 1.0),
                               "sparsity/update_histograms.json")
            tr.finish(run_id, "finished")
        pruned = tr.child_run(exp, parent, "trial-pruned", {TAG_KIND: "trial", TAG_METHOD: method,
                                                             TAG_TRIAL: "99"})
        tr.finish(pruned, "pruned")
    return tr
