"""Standard output that fails as a command-line tool should.

`classp list | head -1` closes the pipe after one line; output to `/dev/full` cannot be
written. Python would raise BrokenPipeError or OSError wherever the buffer happened to be
flushed (inside a trial, or at exit as "Exception ignored"). The `classp` command writes
its standard output through `GuardedOutput`, which flushes each write, so a failure
surfaces at the write that caused it, and turns it into:

- `OutputClosed` for a closed pipe: a KeyboardInterrupt, so that a study stops as it does
  on Ctrl-C (runs ended, the running trial queued again); the command then exits quietly
  with 141 (128 + SIGPIPE), as git and the shell's tools do;
- a `UserError` for any other failed write (a full disk), one line on standard error.
"""

from __future__ import annotations

import contextlib
import os
import sys

from classp.errors import UserError

CLOSED_PIPE_STATUS = 141  # 128 + SIGPIPE, what a shell reports for a tool stopped by a closed pipe


class OutputClosed(KeyboardInterrupt):
    """Whoever read the command's standard output has gone (a closed pipe)."""


class GuardedOutput:
    """A text stream that flushes every write and reports failures as above."""

    def __init__(self, stream):
        self._stream = stream

    def _guarded(self, action):
        try:
            return action()
        except BrokenPipeError:
            raise OutputClosed from None
        except OSError as exc:
            raise UserError(f"cannot write to standard output: {exc.strerror or exc}; "
                            f"redirect it somewhere writable") from None

    def write(self, text: str) -> int:
        def write_and_flush():
            n = self._stream.write(text)
            self._stream.flush()
            return n
        return self._guarded(write_and_flush)

    def flush(self) -> None:
        self._guarded(self._stream.flush)

    def __getattr__(self, name):
        return getattr(self._stream, name)


@contextlib.contextmanager
def guarded_stdout():
    """Inside, `sys.stdout` is guarded; the original comes back on the way out."""
    original = sys.stdout
    sys.stdout = GuardedOutput(original)
    try:
        yield
    finally:
        sys.stdout = original


def silence_stdout() -> None:
    """After a closed pipe: point standard output at /dev/null, so that the interpreter's
    final flush of what is still buffered does not print "Exception ignored"."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
