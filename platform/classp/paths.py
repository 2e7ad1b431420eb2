"""Where local state lives, and the checks that turn a bad path into one line.

Every path the user hands us (CLASSP_HOME, an output file) is checked before anything is
written, so that a file where a folder should be, a read-only folder or a missing parent
is a `UserError` naming the path and the fix, not an OSError halfway through a study.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
from pathlib import Path

from classp.errors import UserError


def home() -> Path:
    """The project's folder for local state (Optuna journal, MLflow store, artifacts)."""
    return Path(os.environ.get("CLASSP_HOME") or ".classp").resolve()


def writable_folder(path: Path, what: str, fix: str) -> Path:
    """`path` as an existing folder we can write into (created if missing)."""
    if path.exists() and not path.is_dir():
        raise UserError(f"{what} {path} is a file, not a folder; {fix}")
    try:
        path.mkdir(parents=True, exist_ok=True)
        # os.access says yes to root on a read-only file system: try a real write.
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        raise UserError(f"{what} {path} is not writable ({exc.strerror or exc}); {fix}") from None
    return path


def ensure_home() -> Path:
    return writable_folder(home(), "CLASSP_HOME", "point CLASSP_HOME at a writable folder")


def output_file(path: Path, flag: str, example: str) -> Path:
    """`path` as a file we may write: not a folder, its folder created and writable."""
    if path.is_dir():
        raise UserError(f"{flag} {path} is a folder; give a file name, e.g. {path / example}")
    writable_folder(path.parent, f"{flag}: the folder", f"give {flag} a path in a writable folder")
    return path


@contextlib.contextmanager
def file_lock(path: Path):
    """An exclusive lock between processes of this host, held while the block runs."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def read_output(path) -> str:
    """The text of an output `classp reproduce` wrote (for --from-logs); a folder, an
    unreadable or a binary file is one line."""
    path = Path(path)
    fix = "give the files `classp reproduce` wrote"
    if not path.is_file():
        raise UserError(f"cannot read {path}: not a regular file; {fix}")
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise UserError(f"cannot read {path}: not a UTF-8 text file (binary data?); {fix}") from None
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror or exc}; {fix}") from None
