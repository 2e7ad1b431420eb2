"""The worker loop: ask, run and tell trials until the study has enough.

It is Optuna's own `Study.optimize` loop (`optuna/study/_optimize.py`, `_run_trial`, as
of Optuna 5.0) written out, for one reason: the check "does the study still need a
trial?" and the `ask()` that creates it happen under a lock shared by all workers, so a
study ends with exactly the requested number of trials however many workers run it.
Optuna's private surface used here is `OPTUNA_PRIVATE` (the heartbeat thread and the
storage behind a study); `tests/study/test_worker.py` checks it is still there.
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from typing import Any

import optuna

from classp import interrupts
from classp.errors import DiskFull, UserError, is_disk_full
from classp.paths import home
from classp.study.objective import run_state
from classp.study.storage import (
    WORKER_ATTR,
    Storage,
    fail_trials_of_dead_workers,
    heartbeat_seconds,
    retry_callback,
    stale_trial_callback,
    worker_id,
)
from classp.tracking import (
    TAG_FAILURE,
    TAG_KIND,
    TAG_STUDY,
    Tracking,
    filter_literal,
    redact,
)

# Optuna's private names this loop relies on, as of Optuna 5.0: the heartbeat thread that
# `optimize` runs around each trial, and the storage and trial id behind the public objects.
OPTUNA_PRIVATE = ("optuna.storages._heartbeat.get_heartbeat_thread",
                  "optuna.storages._heartbeat.is_heartbeat_enabled",
                  "optuna.study.Study._storage", "optuna.trial.Trial._trial_id")
try:
    from optuna.storages._heartbeat import get_heartbeat_thread, is_heartbeat_enabled
except ImportError:  # a newer Optuna moved them: say so before any study starts
    raise UserError(f"classp's study worker follows Optuna 5.0's heartbeat helpers, which "
                    f"Optuna {optuna.__version__} does not have; install optuna 5.0 "
                    f"(pip install 'optuna==5.0.*') until classp follows the new one") from None


def counted_trials(study) -> int:
    """Trials that count towards the requested number: those started or done, less those
    that failed with a dead worker and were retried (the retry counts instead). Waiting
    trials (the enqueued paper trial, a retry) count once a worker takes them."""
    trials = study.get_trials(deepcopy=False)
    retried = {n for t in trials for n in t.system_attrs.get("retry_history", [])}
    return sum(t.number not in retried and t.state != optuna.trial.TrialState.WAITING
               for t in trials)


def close_stale_run(tracking: Tracking):
    """When a dead worker's trial is failed by the heartbeat, end its MLflow run too."""

    def close(study, trial):
        run_id = trial.user_attrs.get("mlflow_run_id")
        if run_id:
            with contextlib.suppress(Exception):
                tracking.finish(run_id, "failed")
                tracking.client.set_tag(run_id, TAG_FAILURE, "worker stopped (heartbeat lost)")

    return close


def work_until(study, objective, storage: Storage, name: str, target: int | None,
               timeout_minutes: float | None, recorder, tracking: Tracking, progress: bool,
               label: str, echo=print, population: int = 1) -> int:
    """Ask, run and tell trials until the study has `target` of them (or time is up):
    one at a time, or `population` at a time trained together (classp.population)."""
    deadline = time.monotonic() + timeout_minutes * 60 if timeout_minutes else None
    heartbeat = is_heartbeat_enabled(study._storage)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=target, initial=min(counted_trials(study), target or 0), unit="trial",
                   desc=label, dynamic_ncols=True)
    ran = 0
    try:
        while deadline is None or time.monotonic() < deadline:
            interrupts.check()  # a Ctrl-C noted but lost between trials
            trials, done = _ask(study, storage, name, target, heartbeat, population, tracking)
            if done:
                break
            if not trials:
                # Enough trials, but some still run elsewhere: if their worker died, the
                # heartbeat (or, on one machine, the liveness check) fails them and their
                # retry is this worker's to run.
                time.sleep(max(1.0, heartbeat_seconds() / 2))
                continue
            told = _run_and_tell(study, objective, trials, tracking, recorder, echo)
            ran += told
            if bar is not None:
                bar.update(told)
    finally:
        if bar is not None:
            bar.close()
    return ran


def _ask(study, storage: Storage, name: str, target: int | None, heartbeat: bool,
         population: int, tracking: Tracking) -> tuple[list, bool]:
    """Under the workers' lock: the trials this worker runs next (at most `population`,
    never past the target), and whether the study is done."""
    with storage.lock(name):
        if heartbeat:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                optuna.storages.fail_stale_trials(study)
        else:
            fail_trials_of_dead_workers(study, stale_trial_callback(close_stale_run(tracking)))
        wanted = population if target is None else min(population, target - counted_trials(study))
        if wanted <= 0:
            return [], not _running(study)
        trials = []
        with warnings.catch_warnings():
            # "Heartbeat ... supposed to be used with Study.optimize": this loop is
            # optimize's own, written out, with the heartbeat threads below.
            warnings.simplefilter("ignore")
            for _ in range(wanted):
                trial = study.ask()
                trial.set_user_attr(WORKER_ATTR, worker_id())
                trials.append(trial)
        return trials, False


def _run_and_tell(study, objective, trials: list, tracking: Tracking, recorder, echo) -> int:
    """Run the trials (one alone, several as populations) and tell the study each one's
    result; returns how many were told."""
    outcomes: list = []
    with contextlib.ExitStack() as beating:
        for trial in trials:
            beating.enter_context(get_heartbeat_thread(trial._trial_id, study._storage))
        try:
            if len(trials) == 1:
                try:
                    outcomes = [objective(trials[0])]
                except optuna.TrialPruned as pruned:
                    outcomes = [pruned]
            else:
                outcomes = objective.run_together(trials)
        except BaseException as exc:
            _fail_together(study, trials, exc, tracking, recorder, echo)
    told = 0
    for trial, outcome in zip(trials, outcomes):
        if _taken_over(study, trial, echo):
            continue
        if isinstance(outcome, optuna.TrialPruned):
            state, values = optuna.trial.TrialState.PRUNED, None
        elif any(math.isnan(v) for v in outcome):
            state, values = optuna.trial.TrialState.FAIL, None
        else:
            state, values = optuna.trial.TrialState.COMPLETE, outcome
        frozen = study.tell(trial, values, state=state)
        _record(study, frozen, tracking, recorder)
        told += 1
    return told


def _fail_together(study, trials: list, exc: BaseException, tracking: Tracking, recorder, echo) -> None:
    """Trials ended by an exception: each failed (and, for a Ctrl-C or a lost tracking
    store, queued again) as one trial would be; then the exception goes on. Failed and
    retried elsewhere while this worker was stopped, a trial can no longer take what the
    objective writes: not an error of its own, so it is dropped."""
    raised = None
    for trial in trials:
        if not isinstance(exc, KeyboardInterrupt) and _taken_over(study, trial, echo):
            continue
        frozen = study.tell(trial, state=optuna.trial.TrialState.FAIL)
        try:
            _after_failure(study, frozen, exc, tracking, recorder)
        except BaseException as after:  # noqa: BLE001 - raised below, once every trial is told
            raised = raised or after
    if raised is not None:
        raise raised


def _taken_over(study, trial, echo) -> bool:
    """Whether the trial was failed (and retried) by another worker while this one was
    stopped past its heartbeat (SIGSTOP, a suspended VM): its result is then dropped, with
    one line, and the worker goes on."""
    current = study._storage.get_trial(trial._trial_id).state
    if current == optuna.trial.TrialState.RUNNING:
        return False
    echo(f"{study.study_name}: trial {trial.number} was failed and retried by another worker "
         f"while this one was stopped; its result is dropped")
    return True


def _running(study) -> bool:
    return any(t.state == optuna.trial.TrialState.RUNNING for t in study.get_trials(deepcopy=False))


def _tracking_down(tracking: Tracking) -> bool:
    try:
        tracking.check()
    except UserError:
        return True
    return False


def _lost_tracking(tracking: Tracking, what: str) -> UserError:
    return UserError(f"lost the MLflow tracking store at {redact(tracking.uri)} {what}; finished "
                     f"trials are kept in the Optuna storage: bring the server back and run the "
                     f"same command again to finish the study")


def _after_failure(study, frozen, exc: BaseException, tracking: Tracking, recorder) -> None:
    """A trial ended by an exception. If the tracking server went away, or the user pressed
    Ctrl-C, the hyper-parameters are not to blame: queue the trial again and say so."""
    interrupted = isinstance(exc, KeyboardInterrupt)
    if is_disk_full(exc):  # no fault of the trial's: queued again, as for Ctrl-C
        with contextlib.suppress(Exception):  # the journal may be on the full disk too
            retry_callback()(study, frozen)
        with contextlib.suppress(Exception):
            recorder(study, frozen)
        raise DiskFull(home()) from None
    if interrupted or _tracking_down(tracking):
        retry_callback()(study, frozen)
        if interrupted:
            with contextlib.suppress(Exception):
                recorder(study, frozen)
            raise exc
        raise _lost_tracking(tracking, f"during trial {frozen.number} (queued to run again)") from None
    with contextlib.suppress(Exception):
        recorder(study, frozen)
    raise exc


def _record(study, frozen, tracking: Tracking, recorder) -> None:
    try:
        recorder(study, frozen)
    except Exception:
        if _tracking_down(tracking):
            raise _lost_tracking(tracking, f"after trial {frozen.number} finished") from None
        raise


def reconcile_runs(tracking: Tracking, experiment_id: str, study) -> int:
    """End MLflow runs left RUNNING by trials that are over (a worker killed, a tracking
    server lost before the run could be closed). Returns how many were closed."""

    # A retried trial starts as a copy of the failed one, its MLflow run id included, until
    # it runs and logs its own: the run belongs to the first trial that names it.
    by_run: dict[str, Any] = {}
    for trial in study.get_trials(deepcopy=False):
        by_run.setdefault(trial.user_attrs.get("mlflow_run_id"), trial)
    running = tracking.client.search_runs(
        [experiment_id], f"tags.`{TAG_STUDY}` = {filter_literal(study.study_name)} and "
                         f"tags.`{TAG_KIND}` = 'trial' and attributes.status = 'RUNNING'")
    closed = 0
    for mlflow_run in running:
        trial = by_run.get(mlflow_run.info.run_id)
        if trial is None or not trial.state.is_finished():
            continue
        tracking.finish(mlflow_run.info.run_id, run_state(trial))
        closed += 1
    return closed

