"""Reading the project's TOML files (study, dashboard and reproduce specs) with one-line errors."""

from __future__ import annotations

import tomllib
from pathlib import Path

from classp.errors import UserError

MAX_SPEC_BYTES = 1 << 20  # the shipped specs hold a few KB; a table of a thousand rows fits


def read_toml(path: str | Path, what: str, example: str) -> tuple[Path, dict]:
    """(path, parsed table); a missing, unreadable or malformed file is a `UserError` naming it."""
    path = Path(path)
    fix = f"give the path of a .toml file such as {example}"
    if not path.exists():
        raise UserError(f"{what} not found: {path}; {fix}")
    if path.is_dir():
        raise UserError(f"{what} {path} is a directory; {fix}")
    if not path.is_file():  # a FIFO would block forever, /dev/zero never end
        raise UserError(f"{what} {path} is not a regular file; {fix}")
    if path.stat().st_size > MAX_SPEC_BYTES:
        raise UserError(f"{what} {path} holds {path.stat().st_size:,} bytes, more than a spec "
                        f"ever needs ({MAX_SPEC_BYTES:,}); {fix}")
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


def read_spec(path: str | Path, what: str, example: str) -> Table:
    """The whole file as a `Table`."""
    path, data = read_toml(path, what, example)
    return Table(path, data, "")


class Table:
    """One table of a spec file, read with checks: every error names the file and the key
    (`path: where.key: problem`) and is one line. The one reader of the three spec kinds."""

    def __init__(self, path: Path, table: dict, where: str):
        self.path, self.table, self.where = path, table, where

    def fail(self, key: str | None, problem: str):
        key_part = f"{self.where}.{key}" if key and self.where else (key or self.where)
        raise UserError(f"{self.path}: {key_part}: {problem}")

    def only(self, allowed) -> None:
        for key in self.table:
            if key not in allowed:
                self.fail(key, f"unknown key; allowed here: {', '.join(sorted(allowed))}")

    def get(self, key: str, types: tuple, default=None, required: bool = False):
        if key not in self.table:
            if required:
                self.fail(key, "missing; it is required")
            return default
        value = self.table[key]
        # TOML integers are fine where floats are wanted; booleans are not numbers here.
        if isinstance(value, bool) and bool not in types:
            self.fail(key, f"expected {_names(types)}, got a boolean")
        if float in types and isinstance(value, int) and not isinstance(value, bool):
            return float(value) if int not in types else value
        if not isinstance(value, types):
            self.fail(key, f"expected {_names(types)}, got {type(value).__name__} {value!r}")
        return value

    def choice(self, key: str, allowed, default=None, required: bool = False,
               what: str | None = None):
        """A name that must be one of `allowed`: 'unknown <what> 'x'; allowed: a, b'."""
        value = self.get(key, (str,), default, required)
        if value is not None and value not in allowed:
            self.fail(key, f"unknown {what or key} {value!r}; allowed: {', '.join(allowed)}")
        return value

    def sub(self, key: str, required: bool = False) -> Table:
        table = self.get(key, (dict,), default={}, required=required)
        return Table(self.path, table, f"{self.where}.{key}" if self.where else key)


def _names(types: tuple) -> str:
    words = {str: "a string", int: "an integer", float: "a number", bool: "true or false",
             list: "a list", dict: "a table"}
    return " or ".join(words.get(t, t.__name__) for t in types)
