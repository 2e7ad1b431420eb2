"""Where a study lives: an Optuna journal file (the default; safe for several processes on
one host) or an RDB URL (PostgreSQL, shared by workers on many machines), and the locks
that let workers share it.

PostgreSQL workers send heartbeats, so that a killed worker's trial is failed and retried.
The journal has none: each trial records its worker (host, pid and the pid's start time),
and a worker on that host fails and retries the trials of workers that are gone. A torn
last line of the journal (a crash mid-write) is cut, and kept beside it, before anything
is appended; a damaged line elsewhere is named and left for the user.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

from classp.errors import UserError, first_line
from classp.paths import ensure_home, file_lock, home
from classp.tracking import (
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


@dataclass
class Storage:
    optuna_storage: Any
    url: str
    lock: Any  # a context manager factory: lock(study_name)


# Where a study command finds its storage when --storage is not given (the compose stack's
# workers: the database URL and its password stay in the compose file's environment).
STORAGE_VARIABLE = "CLASSP_STORAGE"


def default_storage_url() -> str:
    return str(home() / "optuna.journal")


def open_storage(url: str | None, on_stale_trial=None) -> Storage:
    """Open (and check) an Optuna storage: a journal file path, or an RDB URL."""
    beat = heartbeat_seconds()  # checked whatever the storage: a bad setting is a bad setting
    source = "--storage"  # what an error names: the user may not know the variable is set
    if url is None and os.environ.get(STORAGE_VARIABLE):
        url, source = os.environ[STORAGE_VARIABLE], f"${STORAGE_VARIABLE}"
    if url is None:
        ensure_home()
    url = url or default_storage_url()
    if "://" not in url or url.startswith("journal://"):
        path = Path(url.removeprefix("journal://")).expanduser().resolve()
        if path.is_dir():
            raise UserError(f"{source} {path} is a folder; give a journal file, e.g. "
                            f"{path / 'optuna.journal'}")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            repair_journal_tail(path)
            backend = optuna.storages.journal.JournalFileBackend(str(path))
        except OSError as exc:
            raise UserError(f"cannot open the Optuna journal {path}: {exc.strerror}; give a "
                            f"writable path with {source}") from None
        try:
            storage = optuna.storages.JournalStorage(backend)
        except (ValueError, KeyError, TypeError) as exc:  # json's errors are ValueErrors
            raise _corrupt_journal(path, exc) from None
        return Storage(storage, str(path), lambda name: file_lock(Path(f"{path}.classp-lock")))
    if url.split("://", 1)[0].split("+", 1)[0] not in ("postgresql", "sqlite", "mysql"):
        raise UserError(f"unsupported storage URL {redact(url)} (from {source}); use a journal "
                        f"file path or a postgresql:// URL")
    callback = stale_trial_callback(on_stale_trial)
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
        raise UserError(f"cannot open the Optuna storage {redact(url)} (from {source}): "
                        f"{first_line(cause)}; check the host, database, user and password") from None
    if url.startswith("postgresql"):
        lock = lambda name: _postgres_lock(storage, name)  # noqa: E731
    else:  # sqlite and others: one host only
        lock = lambda name: file_lock(home() / "rdb.lock")  # noqa: E731
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
    # A killed worker its parent has not reaped yet is a zombie: it answers signal 0 but
    # will never tell its trial.
    return _process_state(int(pid)) in ("Z", "X") or started not in ("?", _process_start(int(pid)))


def _process_state(pid: int) -> str:
    """The state letter of /proc/<pid>/stat (R, S, T, Z ...); "?" when unknown."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "?"


def fail_trials_of_dead_workers(study, on_failed) -> int:
    """Fail (and hand to `on_failed`, which retries and closes the MLflow run) every RUNNING
    trial whose worker on this host is gone. Call under the study's lock."""
    failed = 0
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        owner = trial.user_attrs.get(WORKER_ATTR)
        if owner and _owner_is_gone(owner):
            study._storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)
            on_failed(study, study._storage.get_trial(trial._trial_id))
            failed += 1
    return failed


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


def stale_trial_callback(on_stale_trial):
    """Retry a trial whose worker died (heartbeat stale), and tell the tracker."""
    retry = retry_callback()

    def callback(study, trial):
        if on_stale_trial is not None:
            on_stale_trial(study, trial)
        retry(study, trial)

    return callback


def retry_callback():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "experimental"
        return optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=3)

