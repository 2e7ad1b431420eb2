"""Dashboard specs (`dashboards/*.toml`), parsed into a frozen dataclass and validated."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from classp.data import SEQUENCES
from classp.methods import METHODS
from classp.tomlfile import read_spec

# The panels a spec may name, in their default order; page.py draws each (checked there).
PANELS = ("verdict", "table1", "matrices", "forgetting", "pareto", "history", "sparsity", "memory",
          "summary")


@dataclass(frozen=True)
class DashboardSpec:
    sequences: tuple[str, ...]
    methods: tuple[str, ...]
    panels: tuple[str, ...]
    name: str
    title: str
    path: Path
    split: str = "test"  # the split whose accuracies the panels show


def load_dashboard_spec(path: str | Path) -> DashboardSpec:
    top = read_spec(path, "dashboard spec", "dashboards/classp-vs-ewc.toml")
    top.only({"dashboard"})
    table = top.sub("dashboard", required=True)
    table.only({"name", "title", "sequences", "methods", "panels", "split"})

    def names(key: str, valid, default=None) -> tuple[str, ...]:
        value = table.get(key, (list,), default)
        if not value or not all(isinstance(v, str) for v in value):
            table.fail(key, f"expected a non-empty list of names, got {value!r}")
        for v in value:
            if v not in valid:
                table.fail(key, f"unknown {key[:-1]} {v!r}; allowed: {', '.join(valid)}")
        return tuple(value)

    split = table.get("split", (str,), "test")
    if split not in ("val", "test"):
        table.fail("split", f"unknown split {split!r}; allowed: val, test")
    name = table.get("name", (str,), top.path.stem)
    return DashboardSpec(
        path=top.path, name=name, title=table.get("title", (str,), name),
        sequences=names("sequences", tuple(SEQUENCES)), methods=names("methods", tuple(METHODS)),
        panels=names("panels", PANELS, list(PANELS)), split=split)
