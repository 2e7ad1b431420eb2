"""Reading the project's TOML files (study, dashboard and reproduce specs) with one-line errors."""

from __future__ import annotations

from pathlib import Path

import tomllib

from classp.errors import UserError


def read_toml(path: str | Path, what: str, example: str) -> tuple[Path, dict]:
    """(path, parsed table); a missing or malformed file is a `UserError` naming it."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{what} not found: {path}; give the path of a .toml file such as {example}")
    try:
        return path, tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{path}: not valid TOML: {exc}") from None
