"""`classp study confirm`: each method's best parameters rerun on confirmation seeds never
used in tuning, evaluated on the test split, and the paired verdict."""

from __future__ import annotations

import math
import statistics
from typing import Any

import optuna

from classp.chance import chance_levels
from classp.confirmation import MethodOutcome, compare, format_table, verdict_lines
from classp.errors import UserError
from classp.seed_runs import tracked_seed_runs
from classp.specs import StudySpec
from classp.study.objective import objective_names, trial_config
from classp.study.run import check_spec_population, load_sequence_for, log_tuning
from classp.study.space import check_search_space
from classp.study.storage import open_storage
from classp.study.summary import best_params, chosen_settings
from classp.tracking import (
    TAG_BEST_TRIAL,
    TAG_KIND,
    TAG_METHOD,
    TAG_REDUCES_TO,
    TAG_RULE,
    TAG_SEQUENCE,
    TAG_STUDY,
    Tracking,
    redact,
)


def confirm(spec: StudySpec, methods: list[str] | None = None, storage_url: str | None = None,
            tracking_uri: str | None = None, echo=print) -> dict[str, Any]:
    """Re-run each method's best parameters on the same confirmation seeds (never used in
    tuning), evaluated on the test split; print per method mean, std, n and 95% CI, the
    methods at chance, and CLASSP against EWC, every other method and the best baseline by
    the tuning objective, each paired by seed with its verdict."""
    methods = methods or [m.name for m in spec.methods]
    for m in methods:
        spec.method(m)
    tracking = Tracking(tracking_uri)
    tracking.check()
    tracking.check_experiment(spec.sequence)
    storage = open_storage(storage_url)
    studies = {}
    for m in methods:
        try:
            studies[m] = optuna.load_study(study_name=spec.study_name(m),
                                           storage=storage.optuna_storage)
        except KeyError:
            raise UserError(f"no study {spec.study_name(m)} in {redact(storage.url)}; run "
                            f"`classp study run {spec.path}` first") from None
    for m, study in studies.items():
        check_search_space(study, spec.method(m))  # the space it was tuned in is the spec's
        tuned = study.user_attrs.get("tuning", "same-stream")  # before [tuning]: same-stream
        if tuned != spec.tuning.key:
            raise UserError(f"{spec.path}: [tuning]: study {study.study_name} was tuned under "
                            f"{tuned!r}, the spec says {spec.tuning.key!r}; confirm the spec it "
                            f"was tuned with, or give the study a new name and run it again")
    chosen = {m: best_params(studies[m], spec) for m in methods}
    # What the tuning objective said of each method's best trial (two objectives: their
    # mean, as best_params picks the trial), fixed before any confirmation run.
    tuning_scores = {m: statistics.fmean(chosen[m][1].values) for m in methods}
    reductions = {m: what for m in methods
                  if (what := chosen_settings(m, *chosen[m])) is not None}
    sequence = load_sequence_for(spec, methods)
    check_spec_population(spec, methods, sequence)
    first = spec.tuning.first_reported  # first-tasks: the tuning tasks are not reported
    all_tasks = [t.name for t in sequence.tasks]
    tasks = all_tasks[first:]
    chances = chance_levels(sequence)
    experiment_id = tracking.experiment(spec.sequence)
    outcomes: dict[str, MethodOutcome] = {}
    for m in methods:
        params, best = chosen[m]
        name = spec.study_name(m)
        parent_id = tracking.parent_run(experiment_id, name, {TAG_METHOD: m, TAG_SEQUENCE: spec.sequence})
        outcome = outcomes[m] = MethodOutcome()
        log_tuning(tracking, parent_id, spec)
        if m in reductions:
            tracking.client.set_tag(parent_id, TAG_REDUCES_TO, reductions[m])
        def describe(seed: int, m=m, params=params, name=name, best=best):
            return (f"{m} confirm seed {seed}",
                    {TAG_KIND: "confirm", TAG_STUDY: name, TAG_METHOD: m, TAG_SEQUENCE: spec.sequence,
                     TAG_RULE: str(params.get("rule", "-")), TAG_BEST_TRIAL: str(best.number)},
                    trial_config(spec, spec.method(m), params, seed),
                    {"study": name, "best_trial": best.number, "confirm_seed": seed,
                     "tuning_protocol": spec.tuning.key, "reported_tasks": ",".join(tasks)})

        for seed, result in tracked_seed_runs(tracking, experiment_id, parent_id,
                                              list(spec.confirm_seeds), spec.population,
                                              sequence, describe):
            if result.status == "finished":
                outcome.add(seed, result.accuracy["test"], chances, first)
            else:
                outcome.diverged.append(seed)
        _log_summary(tracking, parent_id, outcome, tuning_scores[m])
    paired = compare(outcomes)
    names = objective_names(spec)
    objective = names[0] if len(names) == 1 else f"the mean of {' and '.join(names)}"
    text = "\n".join([spec.tuning.describe(spec.sequence, all_tasks),
                      format_table(spec.name, "test", spec.confirm_seeds, tasks, outcomes),
                      *verdict_lines(outcomes, tuning_scores, objective, reductions)])
    echo(text)
    return {"outcomes": outcomes, "paired": paired, "text": text}


def _log_summary(tracking: Tracking, parent_id: str, outcome: MethodOutcome,
                 tuning_score: float) -> None:
    """The parent run keeps the confirmation's summary (old tasks and all tasks, %), the
    learning accuracy beside chance, and the tuning score the best baseline is chosen by."""
    values = {"confirm.test.runs": len(outcome.finals), "confirm.test.diverged": len(outcome.diverged),
              "confirm.tuning_score": tuning_score}
    if outcome.learned:
        values["confirm.test.learned"] = statistics.fmean(outcome.learned.values())
        values["confirm.test.chance"] = statistics.fmean(outcome.chances)
    for label, summary in (("old", outcome.old), ("acc", outcome.mean)):
        if summary.n:
            values.update({f"confirm.test.{label}.mean": summary.mean,
                           f"confirm.test.{label}.std": summary.std,
                           f"confirm.test.{label}.ci_low": summary.low,
                           f"confirm.test.{label}.ci_high": summary.high})
    for key, value in values.items():
        if not math.isnan(value):
            tracking.client.log_metric(parent_id, key, value)

