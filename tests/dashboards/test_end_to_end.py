"""A real tiny study with confirmation, then the dashboard's numbers from its tracked runs:
what tracking logs and what the panels read cannot drift apart unnoticed."""

from __future__ import annotations

import optuna
import pytest

from classp import metrics
from classp.dashboards.panels import PANELS
from classp.dashboards.runs import load_experiment
from classp.specs import load_spec
from classp.study import confirm, open_storage, run_study
from classp.tracking import Tracking
from support import TINY_STUDY


@pytest.fixture
def confirmed(classp_home, tmp_path):
    text = TINY_STUDY.read_text().replace('methods = ["classp", "sgd"]', 'methods = ["classp", "ewc", "sgd"]')
    text += '\n[methods.ewc.search]\nlr = { low = 1e-2, high = 0.1, log = true }\newc_lambda = { low = 1e-2, high = 1.0, log = true }\n'
    spec_path = tmp_path / "tiny-three.toml"
    spec_path.write_text(text)
    spec = load_spec(spec_path)
    run_study(spec, n_trials=2, echo=lambda *_: None)
    printed = []
    result = confirm(spec, echo=printed.append)
    exp = load_experiment(Tracking().client, "split-digits")
    return spec, result, printed[0], exp


def test_the_verdict_panel_matches_what_confirm_printed(confirmed):
    spec, result, printed, exp = confirmed
    info = PANELS["verdict"].info(exp, ["classp", "ewc", "sgd"], "test")
    paired = result["paired"]
    assert info.paired.seeds == paired.seeds == spec.confirm_seeds
    assert info.paired.difference.mean == pytest.approx(paired.difference.mean, abs=1e-9)
    assert info.paired.difference.low == pytest.approx(paired.difference.low, abs=1e-9)
    assert info.sentence in printed  # the same sentence on the page and in the terminal
    assert "verdict: " + info.sentence in printed.splitlines()
    # every line confirm printed below its table (each method, the best baseline, chance,
    # CLASSP's settings named), rebuilt from the tracked runs alone
    assert info.lines == printed.splitlines()[-len(info.lines):]
    # the best baseline is the one whose study's best trial scored highest in tuning
    storage = open_storage(None).optuna_storage
    tuned = {m: optuna.load_study(study_name=spec.study_name(m), storage=storage).best_value
             for m in ("ewc", "sgd")}
    best = max(tuned, key=tuned.get)
    assert any(line.startswith(f"best baseline: {best}, chosen by the tuning objective")
               for line in info.lines)
    assert [p.b for p in info.against] == ["ewc", "sgd"]
    assert info.tuning == printed.splitlines()[0]  # the protocol that chose the settings
    assert info.tuning.startswith("hyperparameters chosen by the same-stream tuning protocol")


def test_the_accuracy_panels_read_the_confirmation_runs_values(confirmed):
    spec, result, _, exp = confirmed
    table = PANELS["table1"].info(exp, ["classp", "ewc", "sgd"], "test")
    forgetting = PANELS["forgetting"].info(exp, ["classp", "ewc", "sgd"], "test")
    for method, outcome in result["outcomes"].items():
        finals = list(outcome.finals.values())
        expected = [100 * sum(f[j] for f in finals) / len(finals) for j in range(len(finals[0]))]
        assert table.mean[method] == pytest.approx(expected)
        assert table.runs[method] == len(spec.confirm_seeds)
        old = sum(100 * metrics.old_task_accuracy(f) for f in finals) / len(finals)
        assert outcome.old.mean == pytest.approx(old)
        assert forgetting.forgetting[method][0] >= 0


def test_a_task_incremental_study_is_tracked_and_drawn_as_any_other(classp_home, tmp_path):
    """A study in another scenario: its runs say which, and the panels read them unchanged."""
    spec_path = tmp_path / "tiny-task.toml"
    spec_path.write_text(TINY_STUDY.read_text().replace("[run]\n", '[run]\nscenario = "task"\n'))
    spec = load_spec(spec_path)
    run_study(spec, n_trials=1, echo=lambda *_: None)
    result = confirm(spec, echo=lambda *_: None)
    client = Tracking().client
    exp = load_experiment(client, "split-digits")
    runs = client.search_runs([client.get_experiment_by_name("split-digits").experiment_id])
    assert runs and {r.data.params.get("scenario") for r in runs if "scenario" in r.data.params} == {"task"}
    table = PANELS["table1"].info(exp, list(result["outcomes"]), "test")
    for method, outcome in result["outcomes"].items():
        finals = list(outcome.finals.values())
        assert table.mean[method] == pytest.approx(
            [100 * sum(f[j] for f in finals) / len(finals) for j in range(len(finals[0]))])
