"""What a study says at its end: trials by state, the best trial, and why most failed."""

from __future__ import annotations

import statistics
from typing import Any

import optuna

from classp import chance
from classp.errors import UserError
from classp.methods.classp import reduction
from classp.specs import FloatRange, StudySpec
from classp.tracking import (
    TAG_BEST_PARAMS,
    TAG_BEST_TRIAL,
    Tracking,
)

# What a study run says at its end: counts by state, the best trial, and why most failed
STATES = ("finished", "pruned", "failed", "diverged")


DIVERGENCE_CAUSES = {
    "ewc": "lr x ewc_lambda: with plain SGD, EWC is stable only while lr * lambda * F stays "
           "small; narrow [methods.ewc.search] towards small lr for large lambda",
    "si": "lr x c: SI's surrogate loss grows with c; narrow [methods.si.search]",
}


def trial_counts(study) -> dict[str, int]:
    """Trials by state: finished, pruned, failed (an error), diverged (a non-finite loss),
    and those still running or waiting."""
    counts = dict.fromkeys((*STATES, "running"), 0)
    for t in study.get_trials(deepcopy=False):
        if t.state == optuna.trial.TrialState.COMPLETE:
            counts["finished"] += 1
        elif t.state == optuna.trial.TrialState.PRUNED:
            counts["pruned"] += 1
        elif t.state == optuna.trial.TrialState.FAIL:
            counts["diverged" if t.user_attrs.get("status") == "diverged" else "failed"] += 1
        else:
            counts["running"] += 1
    return counts


def best_or_none(study, spec: StudySpec):
    try:
        return best_params(study, spec)
    except UserError:
        return None


def settings_line(params: dict) -> str:
    """A trial's settings as a person reads them: 'lr=0.03861, threshold=0' (4 significant
    digits). Not how MLflow stores a param: that is tracking.param_value."""
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


def chosen_settings(method: str, params: dict, trial=None) -> str | None:
    """What a method's chosen settings make it, in words, when that is another method:
    CLASSP with a threshold that suppresses nothing is SGD or AdaGrad (see
    `methods.classp.reduction`). With `trial`, the trial and the settings that decide it
    are named too."""
    if method != "classp" or (what := reduction(params)) is None:
        return None
    if trial is None:
        return what
    shown = {k: params[k] for k in ("schedule", "threshold", "power", "decay", "rule") if k in params}
    return f"{what} [trial {trial.number}: {settings_line(shown)}]"


def chance_line(method: str, trial) -> str | None:
    """The warning for a best trial whose learning accuracy sits at chance (None if it
    learnt, or if the trial predates the record)."""
    learned, chances = trial.user_attrs.get("learned"), trial.user_attrs.get("chances")
    if learned is None or not chances or not chance.at_chance(learned, chances):
        return None
    return "  warning: the best trial's " + chance.chance_warning(method, learned, chances)


def summary_lines(name: str, method: str, ran: int, counts: dict[str, int], best,
                  names: list[str], by: str = "here") -> list[str]:
    total = sum(counts.values())
    states = ", ".join(f"{counts[s]} {s}" for s in STATES)
    if counts["running"]:
        states += f", {counts['running']} running or waiting"
    lines = [f"{name}: {total} trials ({states}); {ran} run {by}"]
    if best is None:
        lines.append("  best: none (no trial finished)")
    else:
        params, trial = best
        values = ", ".join(f"{n} {100 * v:.2f}%" for n, v in zip(names, trial.values))
        lines.append(f"  best: {values} (trial {trial.number}: {settings_line(params)})")
        if (what := chosen_settings(method, params)) is not None:
            lines.append(f"  note: these settings make {method} {what}")
        if (warning := chance_line(method, trial)) is not None:
            lines.append(warning)
    if total and counts["diverged"] > total / 2:
        cause = DIVERGENCE_CAUSES.get(method, "lr: steps too large for this model; lower the "
                                              f"upper end of [methods.{method}.search] lr")
        lines.append(f"  warning: {counts['diverged']} of {total} trials diverged (non-finite "
                     f"loss); the likely cause is {cause}")
    return lines


def log_study_summary(tracking: Tracking, parent_id: str, counts: dict[str, int], best,
                       names: list[str]) -> None:
    """The parent run carries the counts and the best trial, as the summary line says."""
    client = tracking.client
    for state, n in counts.items():
        client.log_metric(parent_id, f"trials_{state}", n)
    if best is not None:
        params, trial = best
        for n, v in zip(names, trial.values):
            client.log_metric(parent_id, f"best.{n}", v)
        client.set_tag(parent_id, TAG_BEST_TRIAL, str(trial.number))
        client.set_tag(parent_id, TAG_BEST_PARAMS, settings_line(params))


def best_params(study, spec: StudySpec) -> tuple[dict, Any]:
    """The best trial's method parameters. With two objectives, the Pareto-optimal trial
    with the highest mean of the two."""
    complete = [t for t in study.get_trials(deepcopy=False)
                if t.state == optuna.trial.TrialState.COMPLETE]
    if not complete:
        raise UserError(f"study {study.study_name} has no finished trial yet; run "
                        f"`classp study run {spec.path}` first")
    best = study.best_trial if len(spec.directions) == 1 else max(
        study.best_trials, key=lambda t: statistics.fmean(t.values))
    params = {}
    method = spec.method(study.study_name.rsplit(".", 1)[1])
    for name, dist in method.search.items():
        if isinstance(dist, FloatRange) and dist.none and not best.params.get(f"{name}_on", True):
            params[name] = 0.0
        elif name in best.params:
            params[name] = best.params[name]
        else:  # the spec searches a parameter the best trial never had
            raise UserError(f"{spec.path}: methods.{method.name}.search.{name}: the best trial "
                            f"(trial {best.number}) of study {study.study_name} has no {name}, "
                            f"which the spec now searches; confirm with the spec it was tuned "
                            f"with, or give the study a new name and run it again")
    return {**method.fixed, **params}, best

