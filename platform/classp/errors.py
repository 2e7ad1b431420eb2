"""The one exception type that the command line turns into a one-line message."""


def first_line(exc: BaseException) -> str:
    """The first non-empty line of an exception's message (or its type), for one-line errors."""
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    return lines[0][:300] if lines else type(exc).__name__


class UserError(Exception):
    """Bad input from the user: the message names the problem and the fix.

    The CLI prints it on one line and exits non-zero, without a traceback.
    """


# Where a full disk shows: the OS (ENOSPC, or a quota: EDQUOT), SQLite through SQLAlchemy
# and MLflow (wrapped, often only in the message), the journal's own writes.
_DISK_FULL_ERRNOS = {28, 122}
_DISK_FULL_WORDS = ("database or disk is full", "no space left on device", "disk quota exceeded")


def is_disk_full(exc: BaseException | None) -> bool:
    """Whether an exception, or any it was raised from, says the disk is full."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in _DISK_FULL_ERRNOS:
            return True
        if any(words in str(exc).lower() for words in _DISK_FULL_WORDS):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


class DiskFull(UserError):
    """A write failed for want of space: the work stops as Ctrl-C stops it (the running
    trial queued again, runs ended KILLED), and the same command resumes once there is room."""

    def __init__(self, folder):
        import shutil

        try:
            free = f"{shutil.disk_usage(folder).free / 2**20:.1f} MB free"
        except OSError:
            free = "free space unknown"
        super().__init__(f"no space left in {folder} ({free}); free at least 10 MB there (a "
                         f"trial writes about 0.1 MB) or point CLASSP_HOME elsewhere, then run "
                         f"the same command again: finished trials are kept, and the "
                         f"interrupted one is queued to run again")
