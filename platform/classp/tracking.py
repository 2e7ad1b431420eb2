"""MLflow tracking: an experiment per task sequence, a parent run per study, a child run
per trial.

Everything goes through `MlflowClient` with explicit run ids (no global active run), and
metrics through batched `log_batch` calls: against SQLite each synchronous call is a
transaction of its own, so one call per metric would cost more than the training it logs
(benchmarks/tracking_overhead.py measures it).

MLflow has no histogram type, so update sparsity is logged three ways: scalar metrics per
parameter tensor over steps (`sparsity/<parameter>`: the fraction of its weights a step
left unchanged, averaged over the logging window), a JSON artifact of per-task histograms
(bin edges and counts of per-weight update counts), and one small PNG figure per run,
which the MLflow UI shows inline, offline.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from classp import interrupts
from classp.errors import DiskFull, UserError, first_line, is_disk_full
from classp.paths import ensure_home, file_lock, home, writable_folder

TAG_STUDY = "classp.study"
TAG_KIND = "classp.kind"  # "study", "trial" or "confirm"
TAG_METHOD = "classp.method"
TAG_SEQUENCE = "classp.sequence"
TAG_RULE = "classp.rule"
TAG_TRIAL = "classp.trial"
TAG_STATE = "classp.state"  # finished, failed, pruned, diverged
TAG_VERSION = "classp.code_version"
TAG_ROW = "classp.row"  # a reproduce run: the row of its table
TAG_SCENARIO = "classp.scenario"  # a reproduce run of a field's table: its scenario
TAG_BEST_TRIAL = "classp.best_trial"  # on a study's parent, and on each confirmation run
TAG_BEST_PARAMS = "classp.best_params"
TAG_FAILURE = "classp.failure"  # why a run failed when no exception says it
TAG_DASHBOARD = "classp.dashboard"
TAG_REDUCES_TO = "classp.reduces_to"  # on a study's parent: the method its chosen settings are

EXPERIMENT_KIND = "mlflow.experimentKind"
MAX_METRICS_PER_BATCH = 1000
MAX_PARAMS_PER_BATCH = 100
# What MLflow's client can open; anything else fails deep inside MLflow with a traceback.
TRACKING_SCHEMES = ("sqlite", "file", "http", "https", "postgresql", "mysql", "mssql", "databricks")


# Where a command finds its tracking URI when --tracking-uri is not given: the compose
# stack's workers get the server's address this way, so no one types it (or a password).
TRACKING_URI_VARIABLE = "CLASSP_TRACKING_URI"


def default_tracking_uri() -> str:
    return f"sqlite:///{home() / 'mlflow.db'}"


def filter_literal(value: str) -> str:
    """`value` quoted for an MLflow search filter. MLflow's filter strings have no escapes:
    a value is quoted with the quote character it does not contain (names holding both are
    refused where they enter: `check_name`)."""
    check_name(value, "value")
    return f'"{value}"' if "'" in value else f"'{value}'"


MAX_NAME_LENGTH = 200


def check_name(value: str, what: str) -> None:
    """A name that reaches MLflow tags and search filters: printable, at most 200
    characters, not both kinds of quote."""
    if len(value) > MAX_NAME_LENGTH:
        raise UserError(f"{what} is {len(value)} characters long; use at most {MAX_NAME_LENGTH}")
    if "'" in value and '"' in value:
        raise UserError(f"{what} {value!r} holds both ' and \"; MLflow's search cannot match "
                        f"such a name: drop one kind of quote")
    if any(not c.isprintable() for c in value):
        raise UserError(f"{what} {value!r} holds control characters; use printable ones")


def _is_local_default(uri: str) -> bool:
    return uri.startswith("sqlite:///")


def redact(url: str) -> str:
    """Hide a password in a URL before it appears in a message."""
    scheme, sep, rest = url.partition("://")
    if sep and "@" in rest:
        credentials, _, host = rest.rpartition("@")
        user = credentials.split(":", 1)[0]
        return f"{scheme}://{user}:***@{host}" if ":" in credentials else url
    return url


def code_version() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=5, cwd=Path(__file__).parent)
        if out.returncode == 0:
            return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    from classp import __version__

    return __version__


class Tracking:
    """A connection to one MLflow tracking store, checked before any training starts."""

    def __init__(self, uri: str | None = None):
        # An unreachable server should fail in seconds, not after minutes of retries.
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "15")
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        import logging

        from mlflow import MlflowClient

        for noisy in ("mlflow", "alembic"):  # "Creating initial MLflow database tables..."
            logging.getLogger(noisy).setLevel(logging.WARNING)
        # MLflow logs each database error with its whole traceback, then raises it: the
        # exception reaches us, and we say it in one line (a full disk, say).
        logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)

        # What an error adds after the URI: the user may not know the variable is set.
        self._from = ""
        if uri is None and os.environ.get(TRACKING_URI_VARIABLE):
            uri, self._from = os.environ[TRACKING_URI_VARIABLE], f" (from ${TRACKING_URI_VARIABLE})"
        if uri is None:
            ensure_home()
        self.uri = uri or default_tracking_uri()
        scheme = self.uri.partition("://")[0].split("+", 1)[0] if "://" in self.uri else "file"
        if scheme not in TRACKING_SCHEMES:
            raise UserError(f"unsupported tracking URI {redact(self.uri)}{self._from}; use one of "
                            f"{', '.join(s + '://' for s in TRACKING_SCHEMES)} (e.g. "
                            f"http://localhost:5000 or sqlite:///.classp/mlflow.db)")
        creating = contextlib.nullcontext()
        db = None
        if _is_local_default(self.uri):
            db = Path(self.uri.removeprefix("sqlite:///"))
            writable_folder(db.parent, "the tracking store's folder",
                            "give --tracking-uri a path in a writable folder")
            # Processes opening a new store at once would each run MLflow's migrations on
            # it ("table ... already exists"): one at a time, the others find it made.
            creating = file_lock(db.with_name(db.name + ".classp-lock"))
        with creating:
            fresh = db is not None and not db.exists()
            try:
                self.client = interrupts.Uninterrupted(MlflowClient(tracking_uri=self.uri))
                if _is_local_default(self.uri):
                    self.client.search_experiments(max_results=1)  # creates the tables
            except Exception as exc:  # an unreadable SQLite file fails here, on opening
                if fresh and is_disk_full(exc):
                    # Half of MLflow's migrations, nothing recorded: gone, so that the same
                    # command starts it afresh once there is room.
                    for leftover in (db, db.with_name(db.name + "-journal")):
                        leftover.unlink(missing_ok=True)
                raise self._unreadable(exc) from None
        self.version = code_version()

    def _unreadable(self, exc: BaseException) -> UserError:
        if _is_local_default(self.uri) and is_disk_full(exc):
            return DiskFull(Path(self.uri.removeprefix("sqlite:///")).parent)
        if _is_local_default(self.uri):
            return UserError(f"the MLflow store {self.uri.removeprefix('sqlite:///')} cannot be "
                             f"read ({first_line(exc.__cause__ or exc)}); it was left as it is: "
                             f"restore it from a backup, or move it aside to start a new one")
        return UserError(f"cannot open the MLflow tracking store at {redact(self.uri)}{self._from}: "
                         f"{first_line(exc)}; check it, or pass another --tracking-uri")

    def check(self) -> None:
        try:
            self.client.search_experiments(max_results=1)
        except Exception as exc:  # connection refused, bad credentials, bad URI ...
            if _is_local_default(self.uri):
                raise self._unreadable(exc) from None
            raise UserError(f"cannot reach the MLflow tracking store at {redact(self.uri)}{self._from}: "
                            f"{first_line(exc)}; start it (docker compose up, or `classp ui`) "
                            f"or pass --tracking-uri") from None

    def check_experiment(self, name: str) -> None:
        """Reads only: an experiment of that name in MLflow's trash can take no runs; say
        how to restore it before anything is written."""
        found = self.client.get_experiment_by_name(name)
        if found is not None and found.lifecycle_stage == "deleted":
            raise UserError(f"the MLflow experiment {name!r} (id {found.experiment_id}) is in "
                            f"MLflow's trash; restore it (`mlflow experiments restore "
                            f"--experiment-id {found.experiment_id}`, with MLFLOW_TRACKING_URI="
                            f"{redact(self.uri)}) or delete it for good (`mlflow gc`), then run "
                            f"the command again")

    def experiment(self, name: str) -> str:
        """The id of the experiment `name`, created if missing (safe against a race)."""
        found = self.client.get_experiment_by_name(name)
        if found is None:
            location = None
            if _is_local_default(self.uri):
                location = (home() / "artifacts" / name).as_uri()
            try:
                self.client.create_experiment(name, artifact_location=location,
                                              tags={EXPERIMENT_KIND: "custom_model_development"})
            except Exception:
                pass  # another worker made it: read it back below
            found = self.client.get_experiment_by_name(name)
            if found is None:
                raise UserError(f"cannot create the MLflow experiment {name!r} at {redact(self.uri)}")
        if EXPERIMENT_KIND not in found.tags:
            # The MLflow 3 UI opens an experiment of unknown kind as a GenAI one (traces);
            # ours are model training: runs, metrics, artifacts.
            self.client.set_experiment_tag(found.experiment_id, EXPERIMENT_KIND,
                                           "custom_model_development")
        return found.experiment_id

    def parent_run(self, experiment_id: str, study_name: str, tags: dict[str, str]) -> str:
        """The study's parent run: found by its tag, or created; a duplicate made by a
        concurrent worker is removed so that every worker shares the earliest one."""
        query = f"tags.`{TAG_STUDY}` = {filter_literal(study_name)} and tags.`{TAG_KIND}` = 'study'"

        def existing():
            return self.client.search_runs([experiment_id], query, order_by=["attributes.start_time ASC"],
                                           max_results=10)

        runs = existing()
        if runs:
            return _earliest(runs).info.run_id
        run = self.client.create_run(experiment_id, run_name=study_name, tags={
            **tags, TAG_STUDY: study_name, TAG_KIND: "study", TAG_VERSION: self.version})
        runs = existing()
        keep = _earliest(runs).info.run_id
        if keep != run.info.run_id:
            self.client.delete_run(run.info.run_id)
        return keep

    def child_run(self, experiment_id: str, parent_id: str, name: str, tags: dict[str, str]) -> str:
        run = self.client.create_run(experiment_id, run_name=name, tags={
            **tags, "mlflow.parentRunId": parent_id, TAG_VERSION: self.version})
        return run.info.run_id

    @contextlib.contextmanager
    def ending_on_error(self, run_id: str):
        """Whatever stops the work inside (Ctrl-C, an error), the run does not stay RUNNING:
        it ends KILLED (interrupted) or FAILED, and the exception goes on."""
        try:
            yield run_id
        except BaseException as exc:
            # A full disk interrupts the work as Ctrl-C does; it is no fault of the run's.
            interrupted = isinstance(exc, (KeyboardInterrupt, SystemExit, DiskFull)) or is_disk_full(exc)
            with contextlib.suppress(Exception):  # a lost server must not hide the cause
                self.client.set_terminated(run_id, "KILLED" if interrupted else "FAILED")
            raise

    def reopen(self, run_id: str) -> None:
        """A resumed study's parent run shows RUNNING again while it works."""
        if self.client.get_run(run_id).info.status != "RUNNING":
            self.client.update_run(run_id, status="RUNNING")

    def finish(self, run_id: str, state: str) -> None:
        """End a run with the trial's state: finished, pruned, failed or diverged."""
        status = {"finished": "FINISHED", "pruned": "KILLED"}.get(state, "FAILED")
        self.client.set_tag(run_id, TAG_STATE, state)
        self.client.set_terminated(run_id, status)


def _earliest(runs):
    return min(runs, key=lambda r: (r.info.start_time or 0, r.info.run_id))


class RunLogger:
    """An engine observer that logs one run into an existing MLflow run."""

    def __init__(self, client, run_id: str, log_steps: bool = True, log_params: bool = True,
                 prefix: str = "", extra_params: dict | None = None):
        self.client, self.run_id = client, run_id
        self.log_steps, self.log_params, self.prefix = log_steps, log_params, prefix
        self.extra_params = extra_params or {}
        self._metrics: list = []
        self._sparsity = None  # classp.sparsity.SparsityReadings, from the run's start
        self.histograms: list[dict] = []

    # -- buffered logging -----------------------------------------------------------------
    def metric(self, key: str, value: float, step: int = 0) -> None:
        from mlflow.entities import Metric

        self._metrics.append(Metric(self.prefix + key, float(value), int(time.time() * 1000),
                                    int(step)))
        if len(self._metrics) >= MAX_METRICS_PER_BATCH:
            self.flush()

    def flush(self) -> None:
        while self._metrics:
            batch, self._metrics = self._metrics[:MAX_METRICS_PER_BATCH], self._metrics[MAX_METRICS_PER_BATCH:]
            self.client.log_batch(self.run_id, metrics=batch, synchronous=True)

    def params(self, values: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, param_value(v)) for k, v in values.items()]
        for start in range(0, len(items), MAX_PARAMS_PER_BATCH):
            self.client.log_batch(self.run_id, params=items[start:start + MAX_PARAMS_PER_BATCH],
                                  synchronous=True)

    def _readings(self):
        if self._sparsity is None:
            from classp.sparsity import SparsityReadings

            self._sparsity = SparsityReadings()
        return self._sparsity

    # -- engine events --------------------------------------------------------------------
    def on_run_start(self, config, sequence, model, method) -> None:
        self._sparsity = None  # a new run's counts start from zero
        if not self.log_params:
            return
        from classp import threads
        from classp.run_config import resolved_settings

        self.params({**resolved_settings(config, sequence), **threads.recorded(), **self.extra_params,
                     "tasks": ",".join(t.name for t in sequence.tasks),
                     "num_parameters": sum(p.numel() for p in model.parameters())})

    def on_step(self, event) -> None:
        if not self.log_steps:
            return
        self.metric("train_loss", event.loss, event.step)
        self.metric("train_accuracy", event.accuracy, event.step)
        if event.updates is not None:
            # One curve over all weights per window (the share a step left unchanged); the
            # per-parameter shares are logged per task (on_task_end), with the histograms.
            # Per-parameter curves at every window would multiply the metric rows by the
            # number of tensors: most of a study's MLflow store.
            self.metric("sparsity/all", self._readings().window(event.updates, event.steps_in_window),
                        event.step)

    def on_task_end(self, event) -> None:
        for split, accuracies in event.accuracy.items():
            for j, a in enumerate(accuracies):
                self.metric(f"accuracy/{split}/task{j + 1}", a, event.task + 1)
            seen = accuracies[: event.task + 1]
            self.metric(f"accuracy/{split}/seen_mean", sum(seen) / len(seen), event.task + 1)
        if event.updates is not None:
            params, unchanged = self._readings().task_end(event.updates, event.steps_in_task)
            for name, share in unchanged.items():
                self.metric(f"sparsity/{name}", share, event.step)
            self.histograms.append({"task": event.task + 1, "task_name": event.task_name,
                                    "steps": event.steps_in_task, "params": params})
        self.flush()

    def on_run_end(self, result) -> None:
        for split, values in result.metrics.items():
            for key, value in values.items():
                self.metric(f"{split}.{key}", value)
        self.metric("state_bytes", result.state_bytes)
        self.metric("steps", result.steps)
        self.metric("seconds", result.seconds)
        if result.diverged_at:
            self.metric("diverged_at_step", result.diverged_at["step"])
        self.flush()
        self.client.log_dict(self.run_id, {
            "tasks": result.task_names, "status": result.status,
            "seed": result.config.seed,
            "note": "R[i][j]: accuracy on task j after training task i; row 0 before training",
            "splits": result.accuracy}, f"{self.prefix}accuracy_matrix.json")
        if self.histograms:
            self.client.log_dict(self.run_id, {"method": result.config.method,
                                               "tasks": self.histograms},
                                 f"{self.prefix}sparsity/update_histograms.json")
            from classp.sparsity_figure import histogram_png

            png = histogram_png(self.histograms, title=f"{result.config.method}: "
                                f"per-weight update counts per task")
            with tempfile.TemporaryDirectory() as folder:
                path = Path(folder) / "update_histograms.png"
                path.write_bytes(png)
                self.client.log_artifact(self.run_id, str(path), f"{self.prefix}sparsity")


def param_value(value: Any) -> str:
    """A setting as an MLflow param holds it: lists and tables as JSON, the rest as str."""
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value)
    return str(value)
