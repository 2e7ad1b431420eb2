"""`classp study confirm`: each method's best parameters rerun on confirmation seeds never
used in tuning, evaluated on the test split, and the paired verdict."""

from __future__ import annotations

import math
from typing import Any

import optuna

from classp.confirmation import MethodOutcome, compare, format_table, verdict_lines
from classp.engine import run
from classp.errors import UserError
from classp.specs import StudySpec
from classp.study.objective import trial_config
from classp.study.run import load_sequence_for
from classp.study.storage import open_storage
from classp.study.summary import best_params
from classp.tracking import (
    TAG_KIND,
    TAG_METHOD,
    TAG_RULE,
    TAG_SEQUENCE,
    TAG_STUDY,
    RunLogger,
    Tracking,
    redact,
)


def confirm(spec: StudySpec, methods: list[str] | None = None, storage_url: str | None = None,
            tracking_uri: str | None = None, echo=print) -> dict[str, Any]:
    """Re-run each method's best parameters on the same confirmation seeds (never used in
    tuning), evaluated on the test split; print per method mean, std, n and 95% CI, and the
    CLASSP-vs-EWC difference paired by seed with its verdict."""
    methods = methods or [m.name for m in spec.methods]
    for m in methods:
        spec.method(m)
    tracking = Tracking(tracking_uri)
    tracking.check()
    storage = open_storage(storage_url)
    studies = {}
    for m in methods:
        try:
            studies[m] = optuna.load_study(study_name=spec.study_name(m),
                                           storage=storage.optuna_storage)
        except KeyError:
            raise UserError(f"no study {spec.study_name(m)} in {redact(storage.url)}; run "
                            f"`classp study run {spec.path}` first") from None
    chosen = {m: best_params(studies[m], spec) for m in methods}
    sequence = load_sequence_for(spec, methods)
    tasks = [t.name for t in sequence.tasks]
    experiment_id = tracking.experiment(spec.sequence)
    outcomes: dict[str, MethodOutcome] = {}
    for m in methods:
        params, best = chosen[m]
        name = spec.study_name(m)
        parent_id = tracking.parent_run(experiment_id, name, {TAG_METHOD: m, TAG_SEQUENCE: spec.sequence})
        outcome = outcomes[m] = MethodOutcome()
        for seed in spec.confirm_seeds:
            run_id = tracking.child_run(experiment_id, parent_id, f"confirm-seed{seed}", {
                TAG_KIND: "confirm", TAG_STUDY: name, TAG_METHOD: m, TAG_SEQUENCE: spec.sequence,
                TAG_RULE: str(params.get("rule", "-")), "classp.best_trial": str(best.number)})
            config = trial_config(spec, spec.method(m), params, seed)
            logger = RunLogger(tracking.client, run_id, extra_params={
                "study": name, "best_trial": best.number, "confirm_seed": seed})
            with tracking.ending_on_error(run_id):
                result = run(config, [logger], sequence=sequence)
            tracking.finish(run_id, "finished" if result.status == "finished" else "diverged")
            if result.status == "finished":
                outcome.finals[seed] = result.accuracy["test"][-1]
            else:
                outcome.diverged.append(seed)
        _log_summary(tracking, parent_id, outcome)
    paired = compare(outcomes)
    text = "\n".join([format_table(spec.name, "test", spec.confirm_seeds, tasks, outcomes),
                      *verdict_lines(paired)])
    echo(text)
    return {"outcomes": outcomes, "paired": paired, "text": text}


def _log_summary(tracking: Tracking, parent_id: str, outcome: MethodOutcome) -> None:
    """The parent run keeps the confirmation's summary (old tasks and all tasks, %)."""
    values = {"confirm.test.runs": len(outcome.finals), "confirm.test.diverged": len(outcome.diverged)}
    for label, summary in (("old", outcome.old), ("acc", outcome.mean)):
        if summary.n:
            values.update({f"confirm.test.{label}.mean": summary.mean,
                           f"confirm.test.{label}.std": summary.std,
                           f"confirm.test.{label}.ci_low": summary.low,
                           f"confirm.test.{label}.ci_high": summary.high})
    for key, value in values.items():
        if not math.isnan(value):
            tracking.client.log_metric(parent_id, key, value)

