"""Ctrl-C, SIGTERM and SIGHUP that always end a command cleanly.

`kill`, `docker stop`, `timeout` and Slurm stop a job with SIGTERM, a closed terminal with
SIGHUP; each is handled as Ctrl-C is (runs ended, the running trial queued again), and
the command exits with 128 + the signal's number, as a shell reports it: 130 for SIGINT,
143 for SIGTERM, 129 for SIGHUP.

Python raises KeyboardInterrupt wherever the main thread happens to be, and where that is
a garbage-collector callback (SQLAlchemy has some) the exception is printed as "Exception
ignored" and lost: the command runs on. The command's SIGINT handler therefore also
notes the request, and training (where most time goes, and most of those callbacks run)
only notes it: `check()`, called at every step and between trials, raises it at a point
where it cannot be lost.

Nor inside a call to the tracking store (`uninterrupted`): a KeyboardInterrupt in the middle
of an SQLite write leaves the connection holding the database's lock, and every write after
it (the runs ended KILLED) fails with "database is locked". It is raised once the call
returns.

Nor is it raised inside an import. torch, numpy and scipy initialise native extensions
that call back into Python; a KeyboardInterrupt there leaves them half-made (numpy then
refuses to load again, or the interpreter aborts), and CPython 3.11 remembers it and ends
the process by SIGINT even after the command has handled it. A request that arrives
during an import is noted and the signal sent again a moment later, until it lands
outside one.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import signal
import sys
import threading

_requested = False
_deferring = 0
_signal = signal.SIGINT  # the signal that asked to stop
_asking_again = False  # a repeat of the signal is already on its way
_repeat_in_flight = False  # the repeat has been sent and not yet handled
_raised = False  # the request has been raised as a KeyboardInterrupt
RETRY_SECONDS = 0.05
HANDLED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def install() -> None:
    """Use this module's SIGINT handler (the `classp` command does, on start), and keep
    Python from printing "Exception ignored ... Traceback" for a Ctrl-C it loses in a
    callback: that one is noted, and the next `check()` raises it."""
    if threading.current_thread() is threading.main_thread():
        for signum in HANDLED:
            signal.signal(signum, _on_sigint)
        if sys.unraisablehook is not _quiet_when_noted:
            global _previous_hook
            _previous_hook = sys.unraisablehook
            sys.unraisablehook = _quiet_when_noted
        # Libraries that clean up after an exception log what then fails, with its
        # traceback (SQLAlchemy: "Error closing cursor" when the interrupt landed in a
        # query); those records reach stderr through logging's last-resort handler. After
        # a Ctrl-C they are the interrupt's echo, and the command ends in one line.
        if _quiet_after_an_interrupt not in logging.lastResort.filters:
            logging.lastResort.addFilter(_quiet_after_an_interrupt)


_previous_hook = sys.unraisablehook


def _quiet_after_an_interrupt(record: logging.LogRecord) -> bool:
    return not (_requested and record.exc_info)


def _quiet_when_noted(unraisable) -> None:
    if not (_requested and isinstance(unraisable.exc_value, KeyboardInterrupt)):
        _previous_hook(unraisable)


def _on_sigint(signum, frame) -> None:
    global _requested, _signal, _repeat_in_flight
    if _repeat_in_flight:
        _repeat_in_flight = False
        if _raised:  # a check() raised it meanwhile: the command is already stopping, and
            return   # a second KeyboardInterrupt would cut short its cleanup
    _requested, _signal = True, signal.Signals(signum)
    if _deferring:
        return
    if _inside_import(frame):
        _ask_again_soon(signum)
        return
    _raise()


def _raise() -> None:
    global _raised
    _raised = True
    raise KeyboardInterrupt


def _inside_import(frame) -> bool:
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib._bootstrap"):
            return True
        frame = frame.f_back
    return False


def _ask_again_soon(signum: int) -> None:
    global _asking_again
    if _asking_again:
        return
    _asking_again = True

    def send_again() -> None:
        global _asking_again, _repeat_in_flight
        _asking_again = False
        if not _raised:
            _repeat_in_flight = True
            os.kill(os.getpid(), signum)

    timer = threading.Timer(RETRY_SECONDS, send_again)
    timer.daemon = True
    timer.start()


def exit_status() -> int:
    """128 + the number of the signal that stopped the command (130 for Ctrl-C)."""
    return 128 + int(_signal)


def message() -> str:
    """The one line an interrupted command ends with."""
    return "classp: interrupted" + ("" if _signal == signal.SIGINT else f" by {_signal.name}")


def check() -> None:
    """Raise the KeyboardInterrupt of a Ctrl-C noted since the command started."""
    if _requested:
        _raise()


@contextlib.contextmanager
def deferred():
    """Inside, Ctrl-C is only noted; the next `check()` raises it."""
    global _deferring
    _deferring += 1
    try:
        yield
    finally:
        _deferring -= 1


def raise_if_noted() -> None:
    """Raise a request noted while deferred, unless it has been raised already: after a
    call made while the command is cleaning up, raising it again would cut the cleanup
    short."""
    if _requested and not _raised:
        _raise()


class Uninterrupted:
    """An object whose every method call runs to its end before a Ctrl-C is raised (the
    MLflow client: see the module's docstring)."""

    def __init__(self, target):
        self._target = target

    def __getattr__(self, name: str):
        value = getattr(self._target, name)
        if not callable(value):
            return value

        @functools.wraps(value)
        def call(*args, **kwargs):
            with deferred():
                result = value(*args, **kwargs)
            raise_if_noted()
            return result

        return call
