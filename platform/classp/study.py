"""Optuna studies: one per (study spec, method), created or resumed, any number of workers.

Storage: a local Optuna journal file by default (safe for several processes on one host;
SQLite is not), or an RDB URL (PostgreSQL) shared by workers on many machines, with
heartbeats so that a killed worker's trial is failed and retried. The journal has no
heartbeats: each trial records its worker (host, pid), and a worker on that host fails and
retries the trials of workers that are gone; a torn last line of the journal (a crash
mid-write) is cut, and kept beside it, before anything is appended.

The worker loop is Optuna's own `_run_trial` written out (ask, heartbeat, tell), for one
reason: the check "does the study still need a trial?" and the `ask()` that creates it
happen under a lock shared by all workers, so a study ends with exactly the requested
number of trials however many workers run it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import math
import os
import socket
import statistics
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from classp import metrics
from classp.confirmation import MethodOutcome, compare, format_table, verdict_lines
from classp.engine import RunConfig, StopRun, check_with_data, data_options, run
from classp.errors import UserError, first_line
from classp.paths import ensure_home, home
from classp.specs import Choice, FloatRange, MethodSpec, StudySpec
from classp.tracking import (
    TAG_KIND,
    TAG_METHOD,
    TAG_RULE,
    TAG_SEQUENCE,
    TAG_STUDY,
    TAG_TRIAL,
    RunLogger,
    Tracking,
    filter_literal,
    redact,
)


def heartbeat_seconds() -> int:
    """Seconds between a PostgreSQL worker's heartbeats (CLASSP_HEARTBEAT_SECONDS, default 30);
    a trial is taken for dead after two missed beats."""
    text = os.environ.get("CLASSP_HEARTBEAT_SECONDS", "30")
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise UserError(f"CLASSP_HEARTBEAT_SECONDS must be a whole number of seconds >= 1, got "
                        f"{text!r}; unset it for the default 30")
    return value


# --------------------------------------------------------------------------------------
# Storage and the cross-worker lock
# --------------------------------------------------------------------------------------


@dataclass
class Storage:
    optuna_storage: Any
    url: str
    lock: Any  # a context manager factory: lock(study_name)


def default_storage_url() -> str:
    return str(home() / "optuna.journal")


def open_storage(url: str | None, on_stale_trial=None) -> Storage:
    """Open (and check) an Optuna storage: a journal file path, or an RDB URL."""
    import optuna

    beat = heartbeat_seconds()  # checked whatever the storage: a bad setting is a bad setting
    if url is None:
        ensure_home()
    url = url or default_storage_url()
    if "://" not in url or url.startswith("journal://"):
        path = Path(url.removeprefix("journal://")).expanduser().resolve()
        if path.is_dir():
            raise UserError(f"--storage {path} is a folder; give a journal file, e.g. "
                            f"{path / 'optuna.journal'}")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            repair_journal_tail(path)
            backend = optuna.storages.journal.JournalFileBackend(str(path))
        except OSError as exc:
            raise UserError(f"cannot open the Optuna journal {path}: {exc.strerror}; give a "
                            f"writable path with --storage") from None
        try:
            storage = optuna.storages.JournalStorage(backend)
        except (ValueError, KeyError, TypeError) as exc:  # json's errors are ValueErrors
            raise _corrupt_journal(path, exc) from None
        return Storage(storage, str(path), lambda name: _file_lock(Path(f"{path}.classp-lock")))
    if url.split("://", 1)[0].split("+", 1)[0] not in ("postgresql", "sqlite", "mysql"):
        raise UserError(f"unsupported storage URL {redact(url)}; use a journal file path or a "
                        f"postgresql:// URL")
    callback = _stale_trial_callback(on_stale_trial)
    try:
        # Workers started together on an empty database would all create Optuna's tables
        # at once, and PostgreSQL fails all but one; one at a time, the others find them.
        with _schema_lock(url), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # heartbeat is "experimental" in some versions
            storage = optuna.storages.RDBStorage(
                url, engine_kwargs={"pool_pre_ping": True}, heartbeat_interval=beat,
                grace_period=2 * beat, heartbeat_stale_trial_callback=callback)
    except Exception as exc:
        cause = exc.__cause__ or exc.__context__ or exc  # Optuna wraps the driver's error
        raise UserError(f"cannot open the Optuna storage {redact(url)}: {first_line(cause)}; "
                        f"check the host, database, user and password") from None
    if url.startswith("postgresql"):
        lock = lambda name: _postgres_lock(storage, name)  # noqa: E731
    else:  # sqlite and others: one host only
        lock = lambda name: _file_lock(home() / "rdb.lock")  # noqa: E731
    return Storage(storage, url, lock)


def _corrupt_journal(path: Path, exc: Exception) -> UserError:
    """Optuna cannot replay the journal: name the first line that is not a JSON record.
    Nothing is changed: a line in the middle may be a real record damaged, and only the
    user can tell."""
    import json

    where = ""
    with open(path, "rb") as journal:
        for number, line in enumerate(journal, 1):
            try:
                record = json.loads(line)
                if not isinstance(record, dict) or "op_code" not in record:
                    raise ValueError
            except ValueError:
                where = f" at line {number} (not a journal record)"
                break
    return UserError(f"the Optuna journal {path} cannot be read{where or ': ' + first_line(exc)}; "
                     f"it was left as it is: restore it from a backup, or remove that line from "
                     f"a copy and pass the copy with --storage")


def repair_journal_tail(path: Path, echo=None) -> int:
    """A crash mid-write leaves a torn last line; the next append would glue onto it and
    make the whole journal unreadable. Cut the torn tail (under Optuna's own journal lock),
    keep what was cut beside the journal, and say so. Returns the bytes cut."""
    import optuna

    if not path.exists() or path.stat().st_size == 0:
        return 0
    lock = optuna.storages.journal.JournalFileSymlinkLock(str(path))
    lock.acquire()
    try:
        with open(path, "rb+") as journal:
            journal.seek(0, os.SEEK_END)
            size = journal.tell()
            journal.seek(max(0, size - 1))
            if journal.read(1) == b"\n":
                return 0
            journal.seek(0)
            data = journal.read()
            keep = data.rfind(b"\n") + 1  # 0: not one whole line
            kept = path.with_name(f"{path.name}.torn-{int(time.time())}")
            kept.write_bytes(data[keep:])
            journal.truncate(keep)
    finally:
        lock.release()
    (echo or (lambda text: print(text, file=sys.stderr)))(
        f"warning: the Optuna journal {path} ended in a torn line (a crash mid-write); cut "
        f"{size - keep} bytes, kept in {kept.name}")
    return size - keep


# Journal storage has no heartbeats: a trial records its worker (host, pid and the pid's
# start time, so that a reused pid is not taken for the same process), and a worker that
# finds a RUNNING trial whose owner on this host is gone fails it and queues its retry.
WORKER_ATTR = "classp.worker"


def worker_id(pid: int | None = None) -> str:
    pid = pid or os.getpid()
    return f"{socket.gethostname()}:{pid}:{_process_start(pid)}"


def _process_start(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return "?"


def _owner_is_gone(owner: str) -> bool:
    host, _, rest = owner.partition(":")
    pid, _, started = rest.partition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False  # another machine's worker: no way to tell from here
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return started not in ("?", _process_start(int(pid)))


def fail_trials_of_dead_workers(study, on_failed) -> int:
    """Fail (and hand to `on_failed`, which retries and closes the MLflow run) every RUNNING
    trial whose worker on this host is gone. Call under the study's lock."""
    import optuna

    failed = 0
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        owner = trial.user_attrs.get(WORKER_ATTR)
        if owner and _owner_is_gone(owner):
            study._storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)
            on_failed(study, study._storage.get_trial(trial._trial_id))
            failed += 1
    return failed


@contextlib.contextmanager
def _file_lock(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def _schema_lock(url: str):
    """A PostgreSQL advisory lock around creating the storage (nothing for other URLs)."""
    if not url.startswith("postgresql"):
        yield
        return
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _lock_key("classp.schema")})
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _lock_key("classp.schema")})
                conn.commit()
    finally:
        engine.dispose()


def _lock_key(name: str) -> int:
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


@contextlib.contextmanager
def _postgres_lock(storage, name: str):
    from sqlalchemy import text

    key = _lock_key(name)
    with storage.engine.connect() as conn:
        conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": key})
        try:
            yield
        finally:
            conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
            conn.commit()


def _stale_trial_callback(on_stale_trial):
    """Retry a trial whose worker died (heartbeat stale), and tell the tracker."""
    retry = _retry_callback()

    def callback(study, trial):
        if on_stale_trial is not None:
            on_stale_trial(study, trial)
        retry(study, trial)

    return callback


# --------------------------------------------------------------------------------------
# Search spaces
# --------------------------------------------------------------------------------------


def search_distributions(method: MethodSpec) -> dict:
    """The method's search space as Optuna distributions, by parameter name. A range with
    `none = true` adds a `<name>_on` switch: "no threshold" is a choice of its own, not a
    tiny value."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    space: dict = {}
    for name, dist in method.search.items():
        if isinstance(dist, Choice):
            space[name] = CategoricalDistribution(list(dist.choices))
            continue
        if dist.none:
            space[f"{name}_on"] = CategoricalDistribution([True, False])
        space[name] = FloatDistribution(dist.low, dist.high, log=dist.log)
    return space


def suggest(trial, method: MethodSpec) -> dict[str, Any]:
    from optuna.distributions import CategoricalDistribution

    space = search_distributions(method)

    def ask(name: str):
        dist = space[name]
        if isinstance(dist, CategoricalDistribution):
            return trial.suggest_categorical(name, list(dist.choices))
        return trial.suggest_float(name, dist.low, dist.high, log=dist.log)

    params: dict[str, Any] = {}
    for name in method.search:
        if f"{name}_on" in space and not ask(f"{name}_on"):
            params[name] = 0.0
            continue
        params[name] = ask(name)
    return params


def check_search_space(study, method: MethodSpec) -> None:
    """Optuna refuses, mid-study, a parameter whose distribution changed kind (float to
    choices, log to linear, other choices). Catch that before any trial runs and say how
    to go on; a range that only moved its bounds is fine."""
    space = search_distributions(method)
    for trial in study.get_trials(deepcopy=False):
        for name, old in trial.distributions.items():
            new = space.get(name)
            if new is None or _same_kind(old, new):
                continue
            raise UserError(
                f"study {study.study_name!r} already has trials where {name} was "
                f"{_describe(old)}; the spec now says {_describe(new)}: give the study a new "
                f"name ([study] name) or delete the old one (optuna delete-study --study-name "
                f"NAME --storage URL)")


def _describe(dist) -> str:
    from optuna.distributions import CategoricalDistribution

    if isinstance(dist, CategoricalDistribution):
        return f"one of {list(dist.choices)}"
    return f"a {'log' if getattr(dist, 'log', False) else 'linear'} range [{dist.low:g}, {dist.high:g}]"


def _same_kind(old, new) -> bool:
    from optuna.distributions import CategoricalDistribution

    if type(old) is not type(new):
        return False
    if isinstance(old, CategoricalDistribution):
        return old.choices == new.choices
    return getattr(old, "log", None) == getattr(new, "log", None)


def paper_trial_params(method: MethodSpec) -> dict[str, Any]:
    """The paper's settings in the study's parameter names (for enqueue_trial)."""
    out: dict[str, Any] = {}
    for name, value in (method.paper or {}).items():
        dist = method.search[name]
        if isinstance(dist, FloatRange) and dist.none:
            on = value not in (0, 0.0, None, "none")
            out[f"{name}_on"] = on
            if on:
                out[name] = float(value)
        else:
            out[name] = value
    return out


def make_sampler(spec: StudySpec):
    import optuna

    if spec.sampler == "random":
        return optuna.samplers.RandomSampler(seed=spec.sampler_seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # Optuna 5's defaults, set explicitly; group=True for the conditional threshold.
        return optuna.samplers.TPESampler(seed=spec.sampler_seed, multivariate=True, group=True,
                                          constant_liar=True, n_startup_trials=5)


def make_pruner(spec: StudySpec):
    import optuna

    if spec.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=spec.pruner_startup_trials)
    return optuna.pruners.NopPruner()


# --------------------------------------------------------------------------------------
# One trial
# --------------------------------------------------------------------------------------


class _PruningReporter:
    """Engine observer: after each task, report the mean accuracy so far on the tuning
    split and stop the run if the pruner says so."""

    def __init__(self, trial, split: str, offset: int):
        self.trial, self.split, self.offset = trial, split, offset
        self.pruned = False

    def on_run_start(self, *args):
        pass

    def on_step(self, event):
        pass

    def on_task_end(self, event):
        seen = event.accuracy[self.split][: event.task + 1]
        self.trial.report(sum(seen) / len(seen), self.offset + event.task)
        if self.trial.should_prune():
            self.pruned = True
            raise StopRun

    def on_run_end(self, result):
        pass


def objective_values(spec: StudySpec, results) -> list[float]:
    """Single: mean over seeds of ACC on the tuning split. Two: old-task and new-task
    accuracy (mean final accuracy on tasks 1..T-1, and on task T)."""
    finals = [r.accuracy[spec.tune_split][-1] for r in results]
    if spec.objective == "accuracy":
        return [statistics.fmean(metrics.mean_accuracy(f) for f in finals)]
    return [statistics.fmean(metrics.old_task_accuracy(f) for f in finals),
            statistics.fmean(metrics.new_task_accuracy(f) for f in finals)]


class Objective:
    """Runs one trial: every tuning seed, tracked as one MLflow child run."""

    def __init__(self, spec: StudySpec, method: MethodSpec, sequence, tracking: Tracking,
                 experiment_id: str, parent_id: str):
        self.spec, self.method, self.sequence = spec, method, sequence
        self.tracking, self.experiment_id, self.parent_id = tracking, experiment_id, parent_id

    def __call__(self, trial):
        import optuna

        params = suggest(trial, self.method)
        method_params = {**self.method.fixed, **params}
        run_id = self.tracking.child_run(self.experiment_id, self.parent_id, f"trial-{trial.number}", {
            TAG_KIND: "trial", TAG_STUDY: self.spec.study_name(self.method.name),
            TAG_METHOD: self.method.name, TAG_SEQUENCE: self.spec.sequence,
            TAG_TRIAL: str(trial.number), TAG_RULE: str(method_params.get("rule", "-"))})
        trial.set_user_attr("mlflow_run_id", run_id)
        results = []
        for i, seed in enumerate(self.spec.seeds):
            # The first seed logs everything (steps, sparsity, artifacts); later seeds log
            # their final metrics and matrix under a seed prefix.
            first = i == 0
            logger = RunLogger(self.tracking.client, run_id, log_steps=first,
                               log_params=first, prefix="" if first else f"seed{seed}/",
                               extra_params={"study": self.spec.study_name(self.method.name),
                                             "trial": trial.number, "seeds": list(self.spec.seeds)})
            observers = [logger]
            pruning = None
            if self.spec.pruner != "none":
                pruning = _PruningReporter(trial, self.spec.tune_split, i * len(self.sequence.tasks))
                observers.append(pruning)
            config = trial_config(self.spec, self.method, params, seed)
            if not first:
                config = dataclasses.replace(config, track_updates=False)
            result = run(config, observers, sequence=self.sequence)
            if pruning is not None and pruning.pruned:
                trial.set_user_attr("status", "pruned")
                raise optuna.TrialPruned(f"pruned after task {len(result.accuracy['val']) - 1}")
            if result.status == "diverged":
                trial.set_user_attr("status", "diverged")
                trial.set_user_attr("diverged_at_step", result.diverged_at["step"])
                # NaN: Optuna records the trial as failed, and the sampler learns nothing
                # false from a made-up score.
                return [math.nan] * len(self.spec.directions)
            results.append(result)
        values = objective_values(self.spec, results)
        trial.set_user_attr("status", "finished")
        return values


def run_state(trial) -> str:
    """The state a finished trial's MLflow run ends in (see `Tracking.finish`)."""
    import optuna

    if trial.user_attrs.get("status") == "diverged":
        return "diverged"
    return {optuna.trial.TrialState.COMPLETE: "finished",
            optuna.trial.TrialState.PRUNED: "pruned"}.get(trial.state, "failed")


class TrialRecorder:
    """Optuna callback: end each trial's MLflow run with its state, and keep the parent
    run's running best."""

    def __init__(self, tracking: Tracking, parent_id: str, names: list[str]):
        self.tracking, self.parent_id, self.names = tracking, parent_id, names

    def __call__(self, study, trial) -> None:

        run_id = trial.user_attrs.get("mlflow_run_id")
        if run_id is None:
            return
        state = run_state(trial)
        client = self.tracking.client
        if trial.values:
            for name, value in zip(self.names, trial.values):
                client.log_metric(run_id, f"objective.{name}", value)
        self.tracking.finish(run_id, state)
        if len(self.names) == 1:
            with contextlib.suppress(ValueError):
                client.log_metric(self.parent_id, "best_value", study.best_value, step=trial.number)
        done = sum(t.state.is_finished() for t in study.get_trials(deepcopy=False))
        client.log_metric(self.parent_id, "trials_done", done, step=trial.number)


# --------------------------------------------------------------------------------------
# The study
# --------------------------------------------------------------------------------------


def objective_names(spec: StudySpec) -> list[str]:
    return [f"{spec.tune_split}_accuracy"] if spec.objective == "accuracy" else [
        "old_task_accuracy", "new_task_accuracy"]


def counted_trials(study) -> int:
    """Trials that count towards the requested number: those started or done, less those
    that failed with a dead worker and were retried (the retry counts instead). Waiting
    trials (the enqueued paper trial, a retry) count once a worker takes them."""
    import optuna

    trials = study.get_trials(deepcopy=False)
    retried = {n for t in trials for n in t.system_attrs.get("retry_history", [])}
    return sum(t.number not in retried and t.state != optuna.trial.TrialState.WAITING
               for t in trials)


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


def trial_config(spec: StudySpec, method: MethodSpec, params: dict, seed: int) -> RunConfig:
    """The run of one seed of a trial (or of a confirmation) with these parameters."""
    splits = ("val", "test") if spec.tune_split != "train" else ("val", "test", "train")
    return RunConfig(sequence=spec.sequence, method=method.name,
                     method_params={**method.fixed, **params}, seed=seed, track_updates=True,
                     eval_splits=splits, **spec.run)


def existing_study(spec: StudySpec, method: str, storage: Storage):
    """The method's study if the storage has it, checked against the spec (its objective
    directions and search space); None if there is none yet. Reads only."""
    import optuna

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
    check_search_space(study, spec.method(method))
    return study


def open_study(spec: StudySpec, method: str, storage: Storage):
    """The method's study, created if missing; the paper's settings are its first trial."""
    import optuna

    name = spec.study_name(method)
    with storage.lock(name):
        study = existing_study(spec, method, storage)
        if study is None:
            study = optuna.create_study(study_name=name, storage=storage.optuna_storage,
                                        sampler=make_sampler(spec), pruner=make_pruner(spec),
                                        directions=spec.directions, load_if_exists=True)
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
    import optuna

    methods, target = _methods_and_target(spec, methods, n_trials)

    # Everything that can fail does so before any training: tracking, storage, data.
    tracking = Tracking(tracking_uri)
    tracking.check()
    storage = open_storage(storage_url, on_stale_trial=_close_stale_run(tracking))
    sequence = load_sequence_for(spec, methods)
    for method in methods:  # a study that no longer fits its spec stops all before any runs
        existing_study(spec, method, storage)
    experiment_id = tracking.experiment(spec.sequence)
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    summary = {}
    for method in methods:
        study = open_study(spec, method, storage)
        name = spec.study_name(method)
        parent_id = tracking.parent_run(experiment_id, name, {
            TAG_METHOD: method, TAG_SEQUENCE: spec.sequence, "mlflow.note.content":
            f"Optuna study {name} ({spec.path.name}); one child run per trial."})
        tracking.reopen(parent_id)
        with tracking.ending_on_error(parent_id):
            if not _has_param(tracking, parent_id, "storage"):
                tracking.client.log_param(parent_id, "storage", redact(storage.url))
            objective = Objective(spec, spec.method(method), sequence, tracking, experiment_id,
                                  parent_id)
            recorder = TrialRecorder(tracking, parent_id, objective_names(spec))
            reconcile_runs(tracking, experiment_id, study)
            ran = _work(study, objective, storage, name, target, spec.timeout_minutes, recorder,
                        tracking, progress, method)
            counts = trial_counts(study)
            best = _best_or_none(study, spec)
            _log_study_summary(tracking, parent_id, counts, best, objective_names(spec))
        tracking.client.set_terminated(parent_id, "FINISHED")
        summary[method] = {"study": name, "trials_run_here": ran, "trials": counted_trials(study),
                           "parent_run_id": parent_id, "counts": counts}
        for line in summary_lines(name, method, ran, counts, best, objective_names(spec)):
            echo(line)
        echo(f"  MLflow parent run {parent_id}")
    return summary


def _methods_and_target(spec: StudySpec, methods: list[str] | None,
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
    import optuna

    from classp.workers import run_workers

    if n_workers < 1:
        raise UserError(f"--workers must be at least 1, got {n_workers}")
    methods, target = _methods_and_target(spec, methods, n_trials)
    # Check tracking, storage and data once, here, so that a bad setting fails before any
    # worker starts (each would print the same error).
    tracking = Tracking(tracking_uri)
    tracking.check()
    storage = open_storage(storage_url)
    load_sequence_for(spec, methods)
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
        codes = run_workers(spec.path, n_workers, method, target, storage.url, tracking.uri, echo)
        failed = [f"worker {i} exited with code {c}" for i, c in enumerate(codes) if c != 0]
        study = optuna.load_study(study_name=spec.study_name(method), storage=storage.optuna_storage)
        counts = trial_counts(study)
        best = _best_or_none(study, spec)
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
    import optuna

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


def _best_or_none(study, spec: StudySpec):
    try:
        return best_params(study, spec)
    except UserError:
        return None


def _param_text(params: dict) -> str:
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


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
        lines.append(f"  best: {values} (trial {trial.number}: {_param_text(params)})")
    if total and counts["diverged"] > total / 2:
        cause = DIVERGENCE_CAUSES.get(method, "lr: steps too large for this model; lower the "
                                              f"upper end of [methods.{method}.search] lr")
        lines.append(f"  warning: {counts['diverged']} of {total} trials diverged (non-finite "
                     f"loss); the likely cause is {cause}")
    return lines


def _log_study_summary(tracking: Tracking, parent_id: str, counts: dict[str, int], best,
                       names: list[str]) -> None:
    """The parent run carries the counts and the best trial, as the summary line says."""
    client = tracking.client
    for state, n in counts.items():
        client.log_metric(parent_id, f"trials_{state}", n)
    if best is not None:
        params, trial = best
        for n, v in zip(names, trial.values):
            client.log_metric(parent_id, f"best.{n}", v)
        client.set_tag(parent_id, "classp.best_trial", str(trial.number))
        client.set_tag(parent_id, "classp.best_params", _param_text(params))


def _has_param(tracking: Tracking, run_id: str, key: str) -> bool:
    return key in tracking.client.get_run(run_id).data.params


def _close_stale_run(tracking: Tracking):
    """When a dead worker's trial is failed by the heartbeat, end its MLflow run too."""

    def close(study, trial):
        run_id = trial.user_attrs.get("mlflow_run_id")
        if run_id:
            with contextlib.suppress(Exception):
                tracking.finish(run_id, "failed")
                tracking.client.set_tag(run_id, "classp.failure", "worker stopped (heartbeat lost)")

    return close


def _work(study, objective, storage: Storage, name: str, target: int | None,
          timeout_minutes: float | None, recorder, tracking: Tracking, progress: bool,
          label: str) -> int:
    """Ask, run and tell trials until the study has `target` of them (or time is up)."""
    import optuna
    from optuna.storages._heartbeat import get_heartbeat_thread, is_heartbeat_enabled

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
            trial = None
            with storage.lock(name):
                if heartbeat:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        optuna.storages.fail_stale_trials(study)
                else:
                    fail_trials_of_dead_workers(study, _stale_trial_callback(_close_stale_run(tracking)))
                enough = target is not None and counted_trials(study) >= target
                if not enough:
                    with warnings.catch_warnings():
                        # "Heartbeat ... supposed to be used with Study.optimize": this loop
                        # is optimize's own, written out, with the heartbeat thread below.
                        warnings.simplefilter("ignore")
                        trial = study.ask()
                    trial.set_user_attr(WORKER_ATTR, worker_id())
                elif not (heartbeat and _running(study)):
                    break
            if trial is None:
                # Enough trials, but some still run elsewhere: if their worker died, the
                # heartbeat fails them and their retry is this worker's to run.
                time.sleep(max(1.0, heartbeat_seconds() / 2))
                continue
            state, values = optuna.trial.TrialState.COMPLETE, None
            with get_heartbeat_thread(trial._trial_id, study._storage):
                try:
                    values = objective(trial)
                except optuna.TrialPruned:
                    state = optuna.trial.TrialState.PRUNED
                except BaseException as exc:
                    frozen = study.tell(trial, state=optuna.trial.TrialState.FAIL)
                    _after_failure(study, frozen, exc, tracking, recorder)
            if values is not None and any(math.isnan(v) for v in values):
                state, values = optuna.trial.TrialState.FAIL, None
            frozen = study.tell(trial, values, state=state)
            _record(study, frozen, tracking, recorder)
            ran += 1
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return ran


def _running(study) -> bool:
    import optuna

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
    if interrupted or _tracking_down(tracking):
        _retry_callback()(study, frozen)
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


def _retry_callback():
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "experimental"
        return optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=3)


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


# --------------------------------------------------------------------------------------
# Confirmation: the best parameters on fresh seeds, on the test split
# --------------------------------------------------------------------------------------


def best_params(study, spec: StudySpec) -> tuple[dict, Any]:
    """The best trial's method parameters. With two objectives, the Pareto-optimal trial
    with the highest mean of the two."""
    import optuna

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
        else:
            params[name] = best.params[name]
    return {**method.fixed, **params}, best


def confirm(spec: StudySpec, methods: list[str] | None = None, storage_url: str | None = None,
            tracking_uri: str | None = None, echo=print) -> dict[str, Any]:
    """Re-run each method's best parameters on the same confirmation seeds (never used in
    tuning), evaluated on the test split; print per method mean, std, n and 95% CI, and the
    CLASSP-vs-EWC difference paired by seed with its verdict."""
    import optuna

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
