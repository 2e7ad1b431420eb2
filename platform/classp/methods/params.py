"""A method's parameters, each declared once: its default, what it does, and what it allows.

A method lists its parameters as `Param`s (`Method.PARAMS`). Everything else is derived
from that one declaration: the method's defaults, the checks of a value and their one-line
errors (a spec's `fixed` and `search` values, `--param` and the flags of `classp run`
all go through `Method.__init__`), the command line's flags and their help
(`command_line_flags`), and what `classp list` prints (`describe`). Adding a knob to a
method is one entry in its `PARAMS`.

A small dataclass rather than a pydantic model: the checks are five lines, the errors
must read as the platform's others do (tests hold their wording), and a method's
parameters are a flat table of numbers, flags and names.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from classp.errors import UserError


@dataclass(frozen=True)
class Param:
    default: Any
    help: str
    low: float | None = None  # the smallest value allowed (with `above`: values above it)
    above: bool = False
    high: float | None = None  # the largest value allowed
    choices: tuple[str, ...] | None = None  # a name: one of these

    @property
    def kind(self) -> type:
        """The type of value it takes: bool, int, float or str (read off its default)."""
        return type(self.default) if isinstance(self.default, (bool, str, int)) else float

    def allowed(self) -> str:
        """The values allowed, in words: '> 0', '>= 0', 'in [0, 1]', 'one of: a, b'."""
        if self.choices:
            return "one of: " + ", ".join(self.choices)
        if self.kind is bool:
            return "true or false"
        if self.low is not None and self.high is not None:
            return f"in {'(' if self.above else '['}{self.low:g}, {self.high:g}]"
        if self.low is not None:
            return f"{'>' if self.above else '>='} {self.low:g}"
        if self.high is not None:
            return f"<= {self.high:g}"
        return "a name" if self.kind is str else "a finite number"

    def check(self, method: str, key: str, value: Any) -> None:
        """Raise a one-line UserError naming the parameter and what it allows."""
        if self.kind is bool:
            if not isinstance(value, bool):
                raise UserError(f"method {method!r}: {key} must be true or false, got {value!r}")
            return
        if self.kind is str:
            if not isinstance(value, str):
                raise UserError(f"method {method!r}: {key} must be a name, got {value!r}")
            if self.choices and value not in self.choices:
                raise UserError(f"method {method!r}: unknown {key} {value!r}; choose one of: "
                                f"{', '.join(self.choices)}")
            return
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise UserError(f"method {method!r}: {key} must be a finite number, got {value!r}")
        below = self.low is not None and (value <= self.low if self.above else value < self.low)
        if below or (self.high is not None and value > self.high):
            if self.low == 0 and self.above and self.high is None:
                raise UserError(f"{key} must be a positive number, got {value!r}")
            raise UserError(f"{key} must be {self.allowed()}, got {value!r}")


def check_params(method: str, declared: Mapping[str, Param], given: Mapping[str, Any]) -> dict[str, Any]:
    """The method's settings: its defaults with `given` checked and laid over them."""
    unknown = sorted(set(given) - set(declared))
    if unknown:
        raise UserError(f"method {method!r} has no parameter {unknown[0]!r}; its parameters "
                        f"are: {', '.join(declared)}")
    for key, value in given.items():
        declared[key].check(method, key, value)
    return {**{k: p.default for k, p in declared.items()}, **given}


def describe(declared: Mapping[str, Param]) -> str:
    """A method's parameters for `classp list`: 'lr=0.01 (> 0), optimizer=sgd (one of: ...)'."""
    return ", ".join(f"{k}={p.default} ({p.allowed()})" for k, p in declared.items())


@dataclass(frozen=True)
class Flag:
    """A command-line flag for a parameter some methods declare."""

    name: str
    kind: type
    help: str


def command_line_flags(methods: Mapping[str, Any]) -> list[Flag]:
    """One flag per parameter name over all methods (`--ewc-lambda`), its help naming the
    methods that take it, what each allows and its default."""
    by_name: dict[str, list[tuple[str, Param]]] = {}
    for method, cls in methods.items():
        for key, param in cls.PARAMS.items():
            by_name.setdefault(key, []).append((method, param))
    flags = []
    for key, declared in by_name.items():
        texts: dict[str, list[str]] = {}
        for method, param in declared:
            texts.setdefault(f"{param.help} ({param.allowed()}; default {param.default})", []).append(method)
        help_text = "; ".join(f"{', '.join(ms)}: {text}" for text, ms in texts.items())
        kinds = {param.kind for _, param in declared}
        kind = kinds.pop() if len(kinds) == 1 else float
        flags.append(Flag(key, kind, help_text))
    return flags
