"""Each panel's numbers, from runs with known values (no browser)."""

from __future__ import annotations

import pytest

from classp.dashboards import panels as P
from classp.dashboards.runs import load_experiment


@pytest.fixture
def exp(tracked):
    return load_experiment(tracked.client, "split-digits")


def test_table1_is_the_mean_with_its_interval_over_confirmation_seeds(exp):
    from classp import stats

    info = P.table1_info(exp, ["classp", "ewc", "sgd"], "test")
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
    info = P.table1_info(exp, ["classp", "ewc"], "test")
    assert info.published["classp"]["mnist"] == (91.05, 1.94)
    assert info.published["ewc"]["mnist"] == (68.52, 5.32)


def test_matrices_are_the_mean_of_the_seeds_matrices(exp):
    info = P.matrices_info(exp, ["classp", "ewc"], "test")
    flat = [v for row in info.matrices["classp"] for v in row]
    assert flat == pytest.approx([0.1, 0.1, 1.0, 0.2, 0.85, 0.8])
    assert info.runs == {"classp": 2, "ewc": 2}


def test_forgetting_and_bwt(exp):
    info = P.forgetting_info(exp, ["classp", "ewc"], "test")
    assert info.forgetting["classp"][0] == pytest.approx(15.0)
    assert info.bwt["ewc"][0] == pytest.approx(-50.0)


def test_pareto_front_keeps_the_undominated_trials(exp):
    info = P.pareto_info(exp, ["classp", "ewc"])
    assert sorted(p[:2] for p in info.points["classp"]) == [(0.4, 0.5), (0.5, 0.9), (0.8, 0.6)]
    assert [p[:2] for p in info.fronts["classp"]] == [(0.5, 0.9), (0.8, 0.6)]  # (0.4, 0.5) is beaten
    assert [p[:2] for p in info.fronts["ewc"]] == [(0.2, 0.9), (0.3, 0.95)][1:]


def test_pareto_front_function():
    pts = [(1, 1, 0), (2, 0, 1), (0, 2, 2), (0.5, 0.5, 3), (2, 0, 4)]
    assert P.pareto_front(pts) == [(0, 2, 2), (1, 1, 0), (2, 0, 1), (2, 0, 4)]


def test_history_has_values_and_the_running_best(exp):
    info = P.history_info(exp, ["classp"])
    assert info.objective == "val_accuracy"
    assert info.values["classp"] == [(0, 0.7), (1, 0.7), (2, 0.45)]
    assert info.best["classp"] == [(0, 0.7), (1, 0.7), (2, 0.7)]


def test_sparsity_histograms_side_by_side(exp):
    info = P.sparsity_info(exp, ["classp", "ewc"])
    centres, shares = info.histograms["classp"]["w"]
    assert sum(shares) == pytest.approx(1.0)
    assert shares[0] == pytest.approx(0.7) and shares[-1] == pytest.approx(0.3)
    assert info.histograms["ewc"]["w"][1][-1] == pytest.approx(1.0)  # EWC moves every weight


def test_memory_is_the_measured_state(exp):
    info = P.memory_info(exp, ["classp", "ewc"])
    assert info.state_bytes == {"classp": 4000.0, "ewc": 8000.0}


def test_summary_counts_trials_by_state(exp):
    info = P.summary_info(exp, ["classp", "ewc", "sgd"], "test")
    classp, ewc, sgd = info.rows
    assert classp[1] == "3 / 1 / 0 / 0" and classp[2] == "2"
    assert classp[3] == "82.50 ± 3.54 [80.00, 85.00]"  # mean ± std [95% CI] of 80 and 85
    assert sgd[1:] == ["0 / 0 / 0 / 0", "0", "-", "-", "-", "-"]


def test_the_verdict_pairs_old_task_accuracy_by_confirmation_seed(exp):
    info = P.verdict_info(exp, ["classp", "ewc"], "test")
    # old tasks = task a: classp 90, 80; ewc 60, 40 -> differences 30, 40 (seeds 1000, 1001)
    d = info.paired.difference
    assert info.paired.seeds == (1000, 1001) and d.mean == pytest.approx(35.0)
    half = 12.706204736174698 * 5.0  # t(0.975, 1) * sd / sqrt(2), sd = 7.0711
    assert (d.low, d.high) == (pytest.approx(35 - half), pytest.approx(35 + half))
    assert info.sentence.startswith("No difference between classp and ewc detectable with 2 seeds")
    assert info.paper is None  # split-digits is not the paper's
    exp.sequence = "mnist-fmnist"
    assert P.verdict_info(exp, ["classp", "ewc"], "test").paper == (91.05, 68.52, "mnist")
    assert P.verdict_info(exp, ["classp", "sgd"], "test") is None  # no EWC to compare with
