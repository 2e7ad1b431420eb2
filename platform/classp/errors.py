"""The one exception type that the command line turns into a one-line message."""


def first_line(exc: BaseException) -> str:
    """The first non-empty line of an exception's message (or its type), for one-line errors."""
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    return lines[0][:300] if lines else type(exc).__name__


class UserError(Exception):
    """Bad input from the user: the message names the problem and the fix.

    The CLI prints it on one line and exits non-zero, without a traceback.
    """
