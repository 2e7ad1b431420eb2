"""What confirm prints below its table, from outcomes with known values: CLASSP against
every method, the best baseline chosen by the tuning objective, chance, reductions."""

from __future__ import annotations

from classp.confirmation import MethodOutcome, best_baseline, format_table, verdict_lines

CHANCES = [0.5, 0.5, 0.5]


def _outcome(old_by_seed: dict[int, float], learned: float = 0.95) -> MethodOutcome:
    """Three tasks; the old tasks at `old` (%), the last at 99%, learnt to `learned`."""
    outcome = MethodOutcome()
    for seed, old in old_by_seed.items():
        a = old / 100
        outcome.add(seed, [[0.5] * 3, [learned, 0.5, 0.5], [a, learned, 0.5], [a, a, learned]], CHANCES)
    return outcome


OUTCOMES = {
    "classp": _outcome({1: 80, 2: 82, 3: 84, 4: 81}),
    "ewc": _outcome({1: 70, 2: 71, 3: 75, 4: 72}),
    # best in confirmation ...
    "sgd": _outcome({1: 90, 2: 91, 3: 92, 4: 93}),
    # ... but adagrad was best on the tuning objective
    "adagrad": _outcome({1: 79, 2: 83, 3: 85, 4: 80}),
}
SCORES = {"classp": 0.9, "ewc": 0.8, "sgd": 0.7, "adagrad": 0.85}


def test_the_best_baseline_is_chosen_by_the_tuning_objective_not_by_confirmation():
    assert best_baseline(SCORES) == "adagrad"
    assert best_baseline({"classp": 0.9, "joint": 0.99, "ewc": 0.5}) == "ewc"  # joint is no baseline
    lines = verdict_lines(OUTCOMES, SCORES, "val_accuracy")
    best = [i for i, line in enumerate(lines) if line.startswith("best baseline: ")]
    assert len(best) == 1
    assert lines[best[0]].startswith("best baseline: adagrad, chosen by the tuning objective "
                                     "(val_accuracy of each study's best trial")
    assert lines[best[0]].endswith("adagrad 85.00%, ewc 80.00%, sgd 70.00%)")
    assert lines[best[0] + 1].startswith("CLASSP vs the best baseline, ADAGRAD (old-task accuracy, "
                                         "paired by seed): classp - adagrad = +0.00 points")
    assert lines[best[0] + 2].startswith("verdict: No difference between classp and adagrad")


def test_classp_is_compared_with_every_other_method_paired_by_seed():
    lines = verdict_lines(OUTCOMES, SCORES, "val_accuracy")
    assert lines[0].startswith("CLASSP vs EWC (old-task accuracy, paired by seed): classp - ewc = +9.75")
    assert lines[1].startswith("verdict: classp keeps old tasks better than ewc by 9.75 points")
    head = lines.index("classp against each method (old-task accuracy, paired by seed; 95% t-intervals "
                       "each on its own, not adjusted for the 3 comparisons):")
    each = lines[head + 1: head + 4]
    assert [line.split(" = ")[0].strip() for line in each] == ["classp - ewc", "classp - sgd", "classp - adagrad"]
    assert each[1].endswith(": sgd keeps old tasks better")
    assert each[2].endswith(": no difference detectable")


def test_no_verdict_is_drawn_against_a_method_at_chance():
    outcomes = {**OUTCOMES, "ewc": _outcome({1: 50, 2: 51, 3: 50, 4: 49}, learned=0.52)}
    assert outcomes["ewc"].at_chance and not outcomes["classp"].at_chance
    table = format_table("t", "test", [1, 2, 3, 4], ["a", "b", "c"], outcomes)
    assert any(line.startswith("ewc (at chance)") for line in table.splitlines())
    assert table.splitlines()[-1].startswith("warning: ewc is at chance: it learns its tasks to 52.0%")
    lines = verdict_lines(outcomes, SCORES, "val_accuracy")
    assert lines[1] == ("verdict: none; ewc is at chance (see the warning above), which is a failed "
                        "run to fix, not a result to beat")
    assert any(line.startswith("  classp - ewc = ") and line.endswith(": no verdict, ewc is at chance")
               for line in lines)


def test_classps_chosen_settings_are_named_when_they_are_another_method():
    lines = verdict_lines(OUTCOMES, SCORES, "val_accuracy", {"classp": "plain SGD (...)"})
    assert lines[-1] == ("note: classp's chosen settings are plain SGD (...); every classp number "
                         "above is that method's, not CLASSP's thresholding")
    assert not any(line.startswith("note:") for line in verdict_lines(OUTCOMES, SCORES, "val_accuracy"))


def test_with_ewc_the_only_baseline_its_comparison_is_printed_once():
    two = {m: OUTCOMES[m] for m in ("classp", "ewc")}
    lines = verdict_lines(two, {"classp": 0.9, "ewc": 0.8}, "val_accuracy")
    assert len(lines) == 3 and lines[0].startswith("CLASSP vs EWC") and lines[1].startswith("verdict: ")
    assert lines[2].startswith("best baseline: ewc, chosen by the tuning objective")
    assert lines[2].endswith("; its verdict is the CLASSP vs EWC one above")
