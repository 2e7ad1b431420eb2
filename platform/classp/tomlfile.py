"""Reading the project's TOML files (study, dashboard and reproduce specs) with one-line errors."""

from __future__ import annotations

from pathlib import Path

import tomllib

from classp.errors import UserError


def read_toml(path: str | Path, what: str, example: str) -> tuple[Path, dict]:
    """(path, parsed table); a missing, unreadable or malformed file is a `UserError` naming it."""
    path = Path(path)
    fix = f"give the path of a .toml file such as {example}"
    if not path.exists():
        raise UserError(f"{what} not found: {path}; {fix}")
    if path.is_dir():
        raise UserError(f"{what} {path} is a directory; {fix}")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise UserError(f"{what} {path} is not a UTF-8 text file (binary data?); {fix}") from None
    except OSError as exc:  # unreadable: permissions, an I/O error
        raise UserError(f"cannot read {what} {path}: {exc.strerror or exc}; {fix}") from None
    try:
        return path, tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{path}: not valid TOML: {exc}") from None
