"""Each panel's numbers, from runs with known values held in memory (no store, no
browser), through the registry the page draws from."""

from __future__ import annotations

from dataclasses import replace

import pytest

from classp.dashboards._pareto import pareto_front
from classp.dashboards.panels import PANELS
from classp.dashboards.runs import load_experiment
from conftest import in_memory_experiment


def panel_info(name: str, exp, methods: list[str], split: str = "test"):
    return PANELS[name].info(exp, methods, split)


def _without_ids(exp) -> list:
    return sorted((replace(r, run_id="", tags={}) for r in exp.runs), key=repr)


def test_the_in_memory_runs_are_what_the_store_gives_back(tracked):
    """The panels' tests read runs from memory: they are the records a real store holds."""
    stored = load_experiment(tracked.client, "split-digits")
    memory = in_memory_experiment()
    assert _without_ids(stored) == _without_ids(memory)
    by_name = {(r.kind, r.method, r.trial, r.params.get("confirm_seed")): r.run_id for r in stored.runs}
    for r in memory.runs:
        for path in ("accuracy_matrix.json", "sparsity/update_histograms.json"):
            stored_id = by_name[r.kind, r.method, r.trial, r.params.get("confirm_seed")]
            assert stored.artifact_json(stored_id, path) == memory.artifact_json(r.run_id, path)


def test_table1_is_the_mean_with_its_interval_over_confirmation_seeds(exp):
    from classp import stats

    info = panel_info("table1", exp, ["classp", "ewc", "sgd"])
    assert info.tasks == ["a", "b"] and info.missing == ["sgd"]
    assert info.mean["classp"] == pytest.approx([85.0, 80.0])
    # error bars: the bootstrap 95% CI of the mean of (90, 80) and of (70, 90)
    for j, values in enumerate(([90.0, 80.0], [70.0, 90.0])):
        s = stats.summarize(values)
        assert info.minus["classp"][j] == pytest.approx(s.mean - s.low)
        assert info.plus["classp"][j] == pytest.approx(s.high - s.mean)
    # never below 0 or above 100, even for a method at the bounds
    assert all(m - lo >= 0 and m + hi <= 100 for m, lo, hi in
               zip(info.mean["ewc"], info.minus["ewc"], info.plus["ewc"]))
    assert info.mean["ewc"] == pytest.approx([50.0, 90.0]) and info.runs["ewc"] == 2
    assert info.published == {}  # split-digits is not one of the paper's sequences


def test_table1_carries_the_paper_numbers_for_the_paper_sequence(exp):
    exp.sequence = "mnist-fmnist"
    info = panel_info("table1", exp, ["classp", "ewc"])
    assert info.published["classp"]["mnist"] == (91.05, 1.94)
    assert info.published["ewc"]["mnist"] == (68.52, 5.32)


def test_matrices_are_the_mean_of_the_seeds_matrices(exp):
    info = panel_info("matrices", exp, ["classp", "ewc"])
    flat = [v for row in info.matrices["classp"] for v in row]
    assert flat == pytest.approx([0.1, 0.1, 1.0, 0.2, 0.85, 0.8])
    assert info.runs == {"classp": 2, "ewc": 2}


def test_forgetting_and_bwt(exp):
    info = panel_info("forgetting", exp, ["classp", "ewc"])
    assert info.forgetting["classp"][0] == pytest.approx(15.0)
    assert info.bwt["ewc"][0] == pytest.approx(-50.0)


def test_pareto_front_keeps_the_undominated_trials(exp):
    info = panel_info("pareto", exp, ["classp", "ewc"], "val")
    assert sorted(p[:2] for p in info.points["classp"]) == [(0.4, 0.5), (0.5, 0.9), (0.8, 0.6)]
    assert [p[:2] for p in info.fronts["classp"]] == [(0.5, 0.9), (0.8, 0.6)]  # (0.4, 0.5) is beaten
    assert [p[:2] for p in info.fronts["ewc"]] == [(0.2, 0.9), (0.3, 0.95)][1:]


def test_pareto_front_function():
    pts = [(1, 1, 0), (2, 0, 1), (0, 2, 2), (0.5, 0.5, 3), (2, 0, 4)]
    assert pareto_front(pts) == [(0, 2, 2), (1, 1, 0), (2, 0, 1), (2, 0, 4)]


def test_history_has_values_and_the_running_best(exp):
    info = panel_info("history", exp, ["classp"], "val")
    assert info.objective == "val_accuracy"
    assert info.values["classp"] == [(0, 0.7), (1, 0.7), (2, 0.45)]
    assert info.best["classp"] == [(0, 0.7), (1, 0.7), (2, 0.7)]


def test_sparsity_histograms_side_by_side(exp):
    info = panel_info("sparsity", exp, ["classp", "ewc"], "val")
    centres, shares = info.histograms["classp"]["w"]
    assert sum(shares) == pytest.approx(1.0)
    assert shares[0] == pytest.approx(0.7) and shares[-1] == pytest.approx(0.3)
    assert info.histograms["ewc"]["w"][1][-1] == pytest.approx(1.0)  # EWC moves every weight


def test_memory_is_the_measured_state(exp):
    info = panel_info("memory", exp, ["classp", "ewc"], "val")
    assert info.state_bytes == {"classp": 4000.0, "ewc": 8000.0}


def test_summary_counts_trials_by_state(exp):
    info = panel_info("summary", exp, ["classp", "ewc", "sgd"])
    classp, ewc, sgd = info.rows
    assert classp[1] == "3 / 1 / 0 / 0" and classp[2] == "2"
    assert classp[3] == "82.50 ± 3.54 [80.00, 85.00]"  # mean ± std [95% CI] of 80 and 85
    assert sgd[1:] == ["0 / 0 / 0 / 0", "0", "-", "-", "-", "-"]


def test_the_verdict_pairs_old_task_accuracy_by_confirmation_seed(exp):
    info = panel_info("verdict", exp, ["classp", "ewc"])
    # old tasks = task a: classp 90, 80; ewc 60, 40 -> differences 30, 40 (seeds 1000, 1001)
    d = info.paired.difference
    assert info.paired.seeds == (1000, 1001) and d.mean == pytest.approx(35.0)
    half = 12.706204736174698 * 5.0  # t(0.975, 1) * sd / sqrt(2), sd = 7.0711
    assert (d.low, d.high) == (pytest.approx(35 - half), pytest.approx(35 + half))
    assert info.sentence.startswith("No difference between classp and ewc detectable with 2 seeds")
    assert info.paper is None  # split-digits is not the paper's
    exp.sequence = "mnist-fmnist"
    assert panel_info("verdict", exp, ["classp", "ewc"]).paper == (91.05, 68.52, "mnist")
    assert panel_info("verdict", exp, ["classp", "sgd"]) is None  # no EWC to compare with
