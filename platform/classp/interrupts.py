"""Ctrl-C that always ends a command cleanly.

Python raises KeyboardInterrupt wherever the main thread happens to be, and where that is
a garbage-collector callback (SQLAlchemy has some) the exception is printed as "Exception
ignored" and lost: the command runs on. The command's SIGINT handler therefore also
notes the request, and training (where most time goes, and most of those callbacks run)
only notes it: `check()`, called at every step and between trials, raises it at a point
where it cannot be lost.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading

_requested = False
_deferring = 0


def install() -> None:
    """Use this module's SIGINT handler (the `classp` command does, on start), and keep
    Python from printing "Exception ignored ... Traceback" for a Ctrl-C it loses in a
    callback: that one is noted, and the next `check()` raises it."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, _on_sigint)
        if sys.unraisablehook is not _quiet_when_noted:
            global _previous_hook
            _previous_hook = sys.unraisablehook
            sys.unraisablehook = _quiet_when_noted


_previous_hook = sys.unraisablehook


def _quiet_when_noted(unraisable) -> None:
    if not (_requested and isinstance(unraisable.exc_value, KeyboardInterrupt)):
        _previous_hook(unraisable)


def _on_sigint(signum, frame) -> None:
    global _requested
    _requested = True
    if not _deferring:
        raise KeyboardInterrupt


def check() -> None:
    """Raise the KeyboardInterrupt of a Ctrl-C noted since the command started."""
    if _requested:
        raise KeyboardInterrupt


@contextlib.contextmanager
def deferred():
    """Inside, Ctrl-C is only noted; the next `check()` raises it."""
    global _deferring
    _deferring += 1
    try:
        yield
    finally:
        _deferring -= 1
