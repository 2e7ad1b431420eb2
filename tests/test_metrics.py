"""Metrics on hand-computed accuracy matrices."""

import pytest

from classp import metrics

# Rows: untrained, after task 1, after task 2, after task 3. Task 1 improves while task 2
# trains (0.90 -> 0.95), so "best after learning" (forgetting) and "just after learning"
# (BWT) differ here and a test can tell the two definitions apart.
R = [
    [0.10, 0.20, 0.05],
    [0.90, 0.30, 0.10],
    [0.95, 0.80, 0.25],
    [0.50, 0.70, 0.95],
]


def test_acc_is_the_mean_of_the_last_row():
    assert metrics.acc(R) == pytest.approx((0.5 + 0.7 + 0.95) / 3)


def test_bwt_compares_the_end_with_just_after_learning():
    assert metrics.bwt(R) == pytest.approx(((0.5 - 0.9) + (0.7 - 0.8)) / 2)


def test_forgetting_is_best_after_learning_minus_final():
    assert metrics.forgetting(R) == pytest.approx([0.95 - 0.5, 0.8 - 0.7])
    assert metrics.mean_forgetting(R) == pytest.approx(0.275)
    assert -metrics.bwt(R) != pytest.approx(metrics.mean_forgetting(R))  # not the same thing


def test_fwt_compares_before_training_with_the_untrained_model():
    assert metrics.fwt(R) == pytest.approx(((0.30 - 0.20) + (0.25 - 0.05)) / 2)


def test_learning_accuracy_is_each_task_right_after_training_it():
    assert metrics.learning_accuracy(R) == pytest.approx((0.90 + 0.80 + 0.95) / 3)
    assert metrics.learning_accuracy([[0.1], [0.9]]) == pytest.approx(0.9)


def test_one_task_has_no_transfer():
    one = [[0.1], [0.9]]
    assert (metrics.bwt(one), metrics.fwt(one), metrics.forgetting(one)) == (0.0, 0.0, [])


def test_summary_names_every_metric():
    s = metrics.summary(R)
    assert set(s) == {"acc", "bwt", "forgetting", "fwt", "learning_acc", "final_acc_task1", "final_acc_task2",
                      "final_acc_task3"}
    assert s["final_acc_task3"] == 0.95


def test_a_malformed_matrix_is_refused():
    with pytest.raises(ValueError, match="T\\+1 rows"):
        metrics.acc([[0.1, 0.2], [0.3, 0.4]])
