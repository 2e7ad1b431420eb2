"""Dashboard specs (`dashboards/*.toml`), parsed into a frozen dataclass and validated."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from classp.data import SEQUENCES
from classp.errors import UserError
from classp.methods import METHODS
from classp.tomlfile import read_toml

# The panels a spec may name, in their default order; page.py draws each (checked there).
PANELS = ("verdict", "table1", "matrices", "forgetting", "pareto", "history", "sparsity", "memory",
          "summary")


@dataclass(frozen=True)
class DashboardSpec:
    path: Path
    name: str
    title: str
    sequences: tuple[str, ...]
    methods: tuple[str, ...]
    panels: tuple[str, ...]
    split: str = "test"


def load_dashboard_spec(path: str | Path) -> DashboardSpec:
    path, data = read_toml(path, "dashboard spec", "dashboards/classp-vs-ewc.toml")

    def fail(key: str, problem: str):
        raise UserError(f"{path}: {key}: {problem}")

    for key in data:
        if key != "dashboard":
            fail(key, "unknown table; allowed: dashboard")
    table = data.get("dashboard")
    if not isinstance(table, dict):
        fail("dashboard", "missing; it is required")
    allowed = {"name", "title", "sequences", "methods", "panels", "split"}
    for key in table:
        if key not in allowed:
            fail(f"dashboard.{key}", f"unknown key; allowed here: {', '.join(sorted(allowed))}")

    def names(key: str, valid, default=None) -> tuple[str, ...]:
        value = table.get(key, default)
        if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
            fail(f"dashboard.{key}", f"expected a non-empty list of names, got {value!r}")
        for v in value:
            if v not in valid:
                fail(f"dashboard.{key}", f"unknown {key[:-1]} {v!r}; allowed: {', '.join(valid)}")
        return tuple(value)

    split = table.get("split", "test")
    if split not in ("val", "test"):
        fail("dashboard.split", f"unknown split {split!r}; allowed: val, test")
    name = table.get("name", path.stem)
    return DashboardSpec(
        path=path, name=str(name), title=str(table.get("title", name)),
        sequences=names("sequences", tuple(SEQUENCES)), methods=names("methods", tuple(METHODS)),
        panels=names("panels", PANELS, list(PANELS)), split=split)
