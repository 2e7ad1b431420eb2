"""`classp study run`: open (or resume) each method's study, check everything that can fail
before any trial is recorded, then hand the trials to the worker loop (here, or in N worker
processes)."""

from __future__ import annotations

import warnings
from typing import Any

import optuna

from classp import interrupts
from classp.errors import UserError
from classp.run_config import RunConfig, check_with_data, data_options
from classp.specs import StudySpec
from classp.study.objective import (
    Objective,
    TrialRecorder,
    objective_names,
    trial_config,
)
from classp.study.space import (
    check_search_space,
    make_pruner,
    make_sampler,
    paper_trial_params,
)
from classp.study.storage import Storage, open_storage
from classp.study.summary import (
    best_or_none,
    log_study_summary,
    summary_lines,
    trial_counts,
)
from classp.study.worker import (
    close_stale_run,
    counted_trials,
    reconcile_runs,
    work_until,
)
from classp.tracking import (
    TAG_METHOD,
    TAG_SEQUENCE,
    Tracking,
    redact,
)


def load_sequence_for(spec: StudySpec, methods: list[str]):
    """The study's data, loaded once for all its trials (seeds do not change it), and each
    method's run settings checked against it before any trial is recorded."""
    from classp.data import load_sequence

    sequence = load_sequence(spec.sequence, data_options(RunConfig(sequence=spec.sequence, **spec.run)))
    for method in methods:
        try:
            check_with_data(trial_config(spec, spec.method(method), {}, spec.seeds[0]), sequence)
        except UserError as exc:
            raise UserError(f"{spec.path}: [run] for {method}: {exc}") from None
    return sequence


def tuning_sequence_for(spec: StudySpec, methods: list[str]):
    """The data the trials tune on, as the spec's [tuning] protocol has it: the reported
    stream (same-stream), its first K tasks (first-tasks), or another stream
    (held-out-stream), checked like the reported one before any trial is recorded."""
    from classp.data import load_sequence

    tuning = spec.tuning
    if tuning.protocol == "first-tasks":
        sequence = load_sequence_for(spec, methods)
        return sequence.with_tasks(sequence.tasks[:tuning.tasks])
    if tuning.protocol == "same-stream":
        return load_sequence_for(spec, methods)
    reported = load_sequence_for(spec, methods)
    stream = load_sequence(tuning.stream, data_options(RunConfig(sequence=tuning.stream, **spec.run)))
    if (stream.input.kind, stream.input.shape, stream.input.num_classes, stream.input.heads) != (
            reported.input.kind, reported.input.shape, reported.input.num_classes, reported.input.heads):
        raise UserError(f"{spec.path}: [tuning] stream: {tuning.stream} does not fit the model of "
                        f"{spec.sequence} (inputs {stream.input.shape}, {stream.input.num_classes} "
                        f"classes, against {reported.input.shape}, {reported.input.num_classes}); "
                        f"name a stream of the same shape, e.g. its sibling dataset")
    for method in methods:
        try:
            check_with_data(trial_config(spec, spec.method(method), {}, spec.seeds[0],
                                         tuning.stream), stream)
        except UserError as exc:
            raise UserError(f"{spec.path}: [tuning] stream {tuning.stream} for {method}: {exc}") from None
    return stream


def existing_study(spec: StudySpec, method: str, storage: Storage):
    """The method's study if the storage has it, checked against the spec (its objective
    directions and search space); None if there is none yet. Reads only."""
    name = spec.study_name(method)
    try:
        study = optuna.load_study(study_name=name, storage=storage.optuna_storage,
                                  sampler=make_sampler(spec), pruner=make_pruner(spec))
    except KeyError:
        return None
    if list(study.directions) != [optuna.study.StudyDirection[d.upper()] for d in spec.directions]:
        raise UserError(f"study {name!r} has {len(study.directions)} objective(s); the spec's "
                        f"objective {spec.objective!r} has {len(spec.directions)}: give the study "
                        f"a new name ([study] name) or delete the old one")
    # A study made before [tuning] existed was tuned on the reported stream.
    tuned = study.user_attrs.get("tuning", "same-stream")
    if tuned != spec.tuning.key:
        raise UserError(f"study {name!r} was tuned under the tuning protocol {tuned!r}; the spec "
                        f"asks for {spec.tuning.key!r}: give the study a new name ([study] name) "
                        f"so that the two are not mixed")
    check_search_space(study, spec.method(method))
    return study


def open_study(spec: StudySpec, method: str, storage: Storage):
    """The method's study, created if missing; the paper's settings are its first trial."""
    name = spec.study_name(method)
    with storage.lock(name):
        study = existing_study(spec, method, storage)
        if study is None:
            study = optuna.create_study(study_name=name, storage=storage.optuna_storage,
                                        sampler=make_sampler(spec), pruner=make_pruner(spec),
                                        directions=spec.directions, load_if_exists=True)
            study.set_user_attr("tuning", spec.tuning.key)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "experimental" in Optuna 5
            study.set_metric_names(objective_names(spec))
        method_spec = spec.method(method)
        if method_spec.paper and not study.get_trials(deepcopy=False):
            study.enqueue_trial(paper_trial_params(method_spec), user_attrs={"paper": True})
    return study


def run_study(spec: StudySpec, methods: list[str] | None = None, n_trials: int | None = None,
              storage_url: str | None = None, tracking_uri: str | None = None,
              progress: bool = False, echo=print) -> dict[str, Any]:
    """Run (or resume) the study of each method until it has `n_trials` trials."""
    methods, target = methods_and_target(spec, methods, n_trials)

    # Everything that can fail does so before any training: tracking, storage, data.
    tracking = Tracking(tracking_uri)
    tracking.check()
    tracking.check_experiment(spec.sequence)
    storage = open_storage(storage_url, on_stale_trial=close_stale_run(tracking))
    sequence = tuning_sequence_for(spec, methods)
    check_spec_population(spec, methods, sequence)
    for method in methods:  # a study that no longer fits its spec stops all before any runs
        existing_study(spec, method, storage)
    experiment_id = tracking.experiment(spec.sequence)
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    summary = {}
    for method in methods:
        study = open_study(spec, method, storage)
        name = spec.study_name(method)
        with interrupts.deferred():  # a Ctrl-C here: once the run is in the hands below
            parent_id = tracking.parent_run(experiment_id, name, {
                TAG_METHOD: method, TAG_SEQUENCE: spec.sequence, "mlflow.note.content":
                f"Optuna study {name} ({spec.path.name}); one child run per trial."})
            tracking.reopen(parent_id)
        with tracking.ending_on_error(parent_id):
            interrupts.check()
            if not _has_param(tracking, parent_id, "storage"):
                tracking.client.log_param(parent_id, "storage", redact(storage.url))
            log_tuning(tracking, parent_id, spec)
            objective = Objective(spec, spec.method(method), sequence, tracking, experiment_id,
                                  parent_id)
            recorder = TrialRecorder(tracking, parent_id, objective_names(spec))
            reconcile_runs(tracking, experiment_id, study)
            ran = work_until(study, objective, storage, name, target, spec.timeout_minutes,
                             recorder, tracking, progress, method, echo, spec.population)
            counts = trial_counts(study)
            best = best_or_none(study, spec)
            log_study_summary(tracking, parent_id, counts, best, objective_names(spec))
        tracking.client.set_terminated(parent_id, "FINISHED")
        summary[method] = {"study": name, "trials_run_here": ran, "trials": counted_trials(study),
                           "parent_run_id": parent_id, "counts": counts}
        for line in summary_lines(name, method, ran, counts, best, objective_names(spec)):
            echo(line)
        echo(f"  MLflow parent run {parent_id}")
    return summary


def check_spec_population(spec: StudySpec, methods: list[str], sequence) -> None:
    """A study whose trials run as populations: each method's run must be one they train."""
    if spec.population == 1:
        return
    from classp.population import check_can_train

    for method in methods:
        config = trial_config(spec, spec.method(method), {}, spec.seeds[0], sequence.name)
        check_can_train(config, sequence)


def methods_and_target(spec: StudySpec, methods: list[str] | None,
                        n_trials: int | None) -> tuple[list[str], int | None]:
    """The methods to run (an unknown one is a clear error before anything opens) and the
    number of trials each study should have."""
    methods = methods or [m.name for m in spec.methods]
    for m in methods:
        spec.method(m)
    target = n_trials if n_trials is not None else spec.n_trials
    if target is not None and target < 1:
        raise UserError(f"--n-trials must be at least 1, got {target}")
    return methods, target


def run_study_workers(spec: StudySpec, n_workers: int, methods: list[str] | None = None,
                      n_trials: int | None = None, storage_url: str | None = None,
                      tracking_uri: str | None = None, echo=print) -> dict[str, Any]:
    """`run_study` in `n_workers` processes sharing the storage (classp.workers), then the
    summary of each study as one process would print it."""
    from classp.workers import run_workers

    if n_workers < 1:
        raise UserError(f"--workers must be at least 1, got {n_workers}")
    methods, target = methods_and_target(spec, methods, n_trials)
    # Check tracking, storage and data once, here, so that a bad setting fails before any
    # worker starts (each would print the same error).
    tracking = Tracking(tracking_uri)
    tracking.check()
    tracking.check_experiment(spec.sequence)
    storage = open_storage(storage_url)
    check_spec_population(spec, methods, tuning_sequence_for(spec, methods))
    for method in methods:
        existing_study(spec, method, storage)
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    def trials_now(method: str) -> int:
        try:
            study = optuna.load_study(study_name=spec.study_name(method), storage=storage.optuna_storage)
        except KeyError:
            return 0
        return counted_trials(study)

    before = {m: trials_now(m) for m in methods}
    echo(f"starting {n_workers} workers sharing {redact(storage.url)}")
    summary = {}
    for method in methods:
        codes = run_workers(spec.path, n_workers, method, target, storage.url, tracking.uri, echo,
                            spec.population)
        failed = [f"worker {i} exited with code {c}" for i, c in enumerate(codes) if c != 0]
        study = optuna.load_study(study_name=spec.study_name(method), storage=storage.optuna_storage)
        counts = trial_counts(study)
        if failed and _complete(study, target):
            # A worker died, and the others retried its trial: the study is whole.
            echo(f"{spec.study_name(method)}: {'; '.join(failed)}; the others retried its "
                 f"trial, and the study has its {target} trials")
            failed = []
        best = best_or_none(study, spec)
        ran = counted_trials(study) - before[method]
        for line in summary_lines(spec.study_name(method), method, ran, counts, best,
                                  objective_names(spec), by=f"here by {n_workers} workers"):
            echo(line)
        if failed:
            raise UserError(f"{spec.study_name(method)}: {'; '.join(failed)} (its output is above, "
                            f"prefixed [worker N]); finished trials are kept: run the same command "
                            f"again to finish the study")
        summary[method] = {"study": spec.study_name(method), "trials_run_here": ran,
                           "trials": counted_trials(study), "counts": counts}
    return summary


def log_tuning(tracking: Tracking, parent_id: str, spec: StudySpec) -> None:
    """The parent run says which tuning protocol chose its method's hyperparameters."""
    if not _has_param(tracking, parent_id, "tuning_protocol"):
        tracking.client.log_param(parent_id, "tuning_protocol", spec.tuning.key)


def _complete(study, target: int | None) -> bool:
    """Whether the study has its trials, none of them still running or waiting."""
    unfinished = (optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.WAITING)
    return (target is not None and counted_trials(study) >= target
            and not study.get_trials(deepcopy=False, states=unfinished))


def _has_param(tracking: Tracking, run_id: str, key: str) -> bool:
    return key in tracking.client.get_run(run_id).data.params

