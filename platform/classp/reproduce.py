"""`classp reproduce`: the paper's tables, rerun as published, as specified and honestly.

A spec (`studies/paper-table1.toml`) names the table, the sequence, the protocol (the
published one: `paper`) and its rows; each row names the paper's row it reruns
(`paper_row`, whose numbers live in `classp.paper`) or none (a row of our own, such as
textbook EWC). Per row and seed, the row runs once, or, for CLASSP rows, twice: with
`rule="reference-code"` (what the published CLASSP.py computes) and `rule="algorithm"`
(what the paper's Algorithm 1 says). The printed columns:

- paper: the published mean ± std over 10 runs;
- as published: the reference-code rule, evaluated as published (the training sets, the
  model in training mode);
- as specified: Algorithm 1, evaluated the same way;
- honest: the as-published runs evaluated on the held-out test sets in eval mode;
- whether the paper's mean lies in the 95% interval of our as-published mean.

Every run is tracked in MLflow: a parent run per table, a child run per row, rule and seed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from classp import stats
from classp.data import PROTOCOLS, SEQUENCES, DataOptions, load_sequence
from classp.engine import RunConfig
from classp.errors import UserError
from classp.methods import METHODS, build_method
from classp.paper import PAPER_RUNS, TABLES
from classp.paths import read_output
from classp.population import check_can_train
from classp.seed_runs import SeedProgress, tracked_seed_runs
from classp.tomlfile import Table, read_spec
from classp.tracking import (
    TAG_KIND,
    TAG_METHOD,
    TAG_ROW,
    TAG_RULE,
    TAG_SEQUENCE,
    TAG_STUDY,
    Tracking,
)

RULES_COMPARED = ("reference-code", "algorithm")


@dataclass(frozen=True)
class Row:
    label: str
    method: str
    params: dict[str, Any]
    paper_row: str | None = None  # key into classp.paper.TABLES[table]
    assumed: tuple[str, ...] = ()

    @property
    def rules(self) -> tuple[str | None, ...]:
        return RULES_COMPARED if self.method == "classp" else (None,)


@dataclass(frozen=True)
class ReproduceSpec:
    path: Path
    name: str
    sequence: str
    table: str
    protocol: str
    seeds: int
    report_task: str
    rows: tuple[Row, ...] = field(default_factory=tuple)


def load_reproduce_spec(path: str | Path) -> ReproduceSpec:
    top = read_spec(path, "reproduce spec", "studies/paper-table1.toml")
    top.only({"reproduce", "rows"})
    head = top.sub("reproduce", required=True)
    head.only({"name", "sequence", "table", "protocol", "seeds", "report_task"})
    sequence = head.choice("sequence", SEQUENCES, required=True)
    table = head.choice("table", TABLES, required=True)
    protocol = head.choice("protocol", PROTOCOLS, "paper")
    seeds = head.get("seeds", (int,), PAPER_RUNS)
    if seeds < 1:
        head.fail("seeds", f"expected a positive integer, got {seeds!r}")
    rows = []
    for i, row in enumerate(row_tables(top)):
        row.only({"label", "method", "params", "paper_row", "assumed"})
        method, params = row_method(row)
        if "rule" in params:
            row.fail("params.rule", "set by reproduce (both rules are run); remove it")
        try:
            build_method(method, {**params, **({"rule": "algorithm"} if method == "classp" else {})})
        except UserError as exc:
            row.fail("params", str(exc))
        paper_row = row.get("paper_row", (str,), None)
        if paper_row is not None and paper_row not in TABLES[table]:
            row.fail("paper_row", f"{paper_row!r} is not a row of {table}; allowed: "
                                  f"{', '.join(TABLES[table])}")
        rows.append(Row(label=row.get("label", (str,), f"row {i + 1}"), method=method,
                        params=params, paper_row=paper_row,
                        assumed=tuple(row.get("assumed", (list,), ()))))
    if not rows:
        top.fail("rows", "no rows; add [[rows]] tables")
    report_task = head.get("report_task", (str,), "")
    known_tasks = next(iter(TABLES[table].values())).accuracy
    if report_task not in known_tasks:
        head.fail("report_task", f"{report_task!r} is not a column of {table}; allowed: "
                                 f"{', '.join(known_tasks)}")
    return ReproduceSpec(top.path, head.get("name", (str,), top.path.stem), sequence, table,
                         protocol, seeds, report_task, tuple(rows))


def row_tables(top: Table) -> list[Table]:
    """A reproduce spec's [[rows]], each as a Table that names it (rows[i]) in errors."""
    return [Table(top.path, raw if isinstance(raw, dict) else {}, f"rows[{i}]")
            for i, raw in enumerate(top.get("rows", (list,), []))]


def row_method(row: Table) -> tuple[str, dict[str, Any]]:
    """A row's method (a registered name) and its parameters as written."""
    method = row.choice("method", METHODS, required=True)
    return method, dict(row.get("params", (dict,), {}))


def select_rows(spec: ReproduceSpec, selection: str | None) -> list[int]:
    """`--rows 1,4,5` (1-based, in spec order) -> row indexes; None: every row."""
    if not selection:
        return list(range(len(spec.rows)))
    picked = []
    for part in selection.split(","):
        try:
            number = int(part)
        except ValueError:
            number = 0
        if not 1 <= number <= len(spec.rows):
            raise UserError(f"--rows: {part.strip()!r} is not a row number of {spec.path.name} "
                            f"(1 to {len(spec.rows)}); give numbers separated by commas")
        picked.append(number - 1)
    return sorted(set(picked))


# ----------------------------------------------------------------------------------------
# Running the table
# ----------------------------------------------------------------------------------------


@dataclass
class Cell:
    """One row under one rule: % on the reported task, per seed."""

    train: dict[int, float] = field(default_factory=dict)  # as published: train sets, train mode
    test: dict[int, float] = field(default_factory=dict)  # honest: test sets, eval mode
    diverged: list[int] = field(default_factory=list)  # seeds whose loss turned non-finite


def check_population_size(population: int) -> None:
    if population < 1:
        raise UserError(f"--population must be at least 1 (1: one run at a time), got {population}")


def reproduce(spec: ReproduceSpec, seeds: int | None = None, subsample: float = 1.0,
              data_dir: Path | None = None, download: bool = False, tracking_uri: str | None = None,
              device: str = "auto", rows: str | None = None, rules: str | None = None,
              echo=print, population: int = 1) -> dict:
    if seeds is not None and seeds < 1:
        raise UserError(f"--seeds must be at least 1, got {seeds}")
    check_population_size(population)
    seeds = seeds if seeds is not None else spec.seeds
    if not 0 < subsample <= 1:
        raise UserError(f"--subsample must be in (0, 1], got {subsample}")
    picked = select_rows(spec, rows)
    chosen_rules = RULES_COMPARED
    if rules:
        chosen_rules = tuple(r.strip() for r in rules.split(","))
        for r in chosen_rules:
            if r not in RULES_COMPARED:
                raise UserError(f"--rules: unknown rule {r!r}; choose from {', '.join(RULES_COMPARED)}")
    tracking = Tracking(tracking_uri)
    tracking.check()
    sequence = load_sequence(spec.sequence, DataOptions(data_dir=data_dir, download=download,
                                                        subsample=subsample, protocol=spec.protocol))
    task_names = [t.name for t in sequence.tasks]
    if spec.report_task not in task_names:
        raise UserError(f"{spec.path}: reproduce.report_task: {spec.report_task!r} is not a task of "
                        f"{spec.sequence} ({', '.join(task_names)})")
    column = task_names.index(spec.report_task)
    if population > 1:  # refused before anything is recorded
        for i in picked:
            check_can_train(RunConfig(sequence=spec.sequence, method=spec.rows[i].method,
                                      method_params=spec.rows[i].params, protocol=spec.protocol),
                            sequence)
    experiment_id = tracking.experiment(spec.sequence)
    parent = tracking.parent_run(experiment_id, spec.name, {TAG_SEQUENCE: spec.sequence,
                                                             TAG_KIND: "study"})
    results: dict[tuple[int, str | None], Cell] = {}
    def rules_of(row: Row) -> tuple[str | None, ...]:
        return tuple(r for r in row.rules if r is None or r in chosen_rules)

    total = sum(len(rules_of(spec.rows[i])) for i in picked) * seeds
    progress = SeedProgress(total, echo)
    with tracking.ending_on_error(parent):
        for i in picked:
            row = spec.rows[i]
            for rule in rules_of(row):
                cell = results.setdefault((i, rule), Cell())
                params = {**row.params, **({"rule": rule} if rule else {})}
                def describe(seed: int, i=i, row=row, rule=rule, params=params):
                    return (f"row{i + 1}-{rule or row.method}-seed{seed}",
                            {TAG_KIND: "reproduce", TAG_STUDY: spec.name, TAG_METHOD: row.method,
                             TAG_SEQUENCE: spec.sequence, TAG_RULE: rule or "-", TAG_ROW: row.label},
                            RunConfig(sequence=spec.sequence, method=row.method, method_params=params,
                                      seed=seed, device=device, eval_splits=("test",), eval_train=True,
                                      subsample=subsample, track_updates=True, protocol=spec.protocol),
                            {"row": row.label, "subsample": subsample, "reproduce": spec.name})

                for seed, result in tracked_seed_runs(tracking, experiment_id, parent, list(range(seeds)),
                                                      population, sequence, describe):
                    def record(result, seed=seed, cell=cell):
                        cell.train[seed] = 100 * result.accuracy["train"][-1][column]
                        cell.test[seed] = 100 * result.accuracy["test"][-1][column]
                        return f"{cell.train[seed]:.2f}% (published eval), {cell.test[seed]:.2f}% (test)"
                    progress(f"{row.label} | {rule or '-'}", seed, result, record, cell.diverged)
    title = (f"{spec.name}: accuracy (%) on {spec.report_task} after the last task; {spec.sequence}, "
             f"protocol {spec.protocol}" + (f", subsample {subsample:g} of every split"
                                            if subsample < 1 else ", full data")
             + "".join(f"; {n}" for n in sequence.notes if not n.startswith("subsampled")))
    table = format_table(spec, results, title, seeds, picked)
    pairs = comparisons(spec, results, picked)
    table = table + ("\n" + "\n".join(pairs) if pairs else "")
    echo(table)
    tracking.client.log_text(parent, table, "reproduce_table.txt")
    tracking.client.set_terminated(parent, "FINISHED")
    return {"title": title, "table": table, "cells": results}


def _cell(values: dict[int, float], diverged: list[int]) -> str:
    if not values and not diverged:
        return "not run"
    if not values:
        return f"diverged ({len(diverged)} of {len(diverged)})"
    text = stats.summarize(list(values.values())).short()  # "m (n=1)" for a single seed
    if diverged:
        text += f" ({len(diverged)} of {len(values) + len(diverged)} diverged)"
    return text


def _paper_inside(paper_mean: float | None, values: dict[int, float]) -> str:
    if paper_mean is None:
        return "-"
    summary = stats.summarize(list(values.values()))
    if summary.n < 2:
        return "n<2"
    return "yes" if summary.contains(paper_mean) else "no"


def format_table(spec: ReproduceSpec, results: dict, title: str, seeds: int,
                 picked: list[int] | None = None) -> str:
    header = ["row", f"paper (n={PAPER_RUNS})", "ours as published", "ours as specified",
              "ours honest (test)", "paper in CI?"]
    lines = []
    for i in picked if picked is not None else range(len(spec.rows)):
        row = spec.rows[i]
        paper_mean = None
        paper = "(not in the paper)"
        if row.paper_row is not None:
            paper_mean, paper_std = TABLES[spec.table][row.paper_row].accuracy[spec.report_task]
            paper = f"{paper_mean:.2f} ± {paper_std:.2f}"
        missing = Cell()
        published = _published(row, results, i) or missing
        specified = results.get((i, "algorithm"))
        specified = ("(no rule: same runs)" if row.method != "classp" else "not run" if specified is None
                     else _cell(specified.train, specified.diverged))
        label = row.label + (f" [assumed: {', '.join(row.assumed)}]" if row.assumed else "")
        lines.append([label, paper, _cell(published.train, published.diverged), specified,
                      _cell(published.test, published.diverged),
                      _paper_inside(paper_mean, published.train)])
    widths = [max(len(r[c]) for r in [header, *lines]) for c in range(len(header))]
    out = [title,
           f"cells: mean ± std [95% bootstrap CI of the mean] over {seeds} seed(s) (0 to {seeds - 1}); "
           f"published and specified: training sets, model in training mode (as published); "
           f"honest: held-out test sets, eval mode",
           "  ".join(h.ljust(w) for h, w in zip(header, widths))]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in lines]
    return "\n".join(out)


# ----------------------------------------------------------------------------------------
# Paired comparisons, and tables rebuilt from printed runs
# ----------------------------------------------------------------------------------------


def _published(row: Row, results: dict, i: int) -> Cell | None:
    return results.get((i, "reference-code") if row.method == "classp" else (i, None))


def comparisons(spec: ReproduceSpec, results: dict, picked: list[int]) -> list[str]:
    """The first CLASSP row against every row of another method, paired by seed, on the
    published evaluation and on the honest one (test sets, eval mode)."""
    first = next((i for i in picked if spec.rows[i].method == "classp"
                  and _published(spec.rows[i], results, i)), None)
    if first is None:
        return []
    ours = _published(spec.rows[first], results, first)
    lines = []
    for i in picked:
        row, other = spec.rows[i], _published(spec.rows[i], results, i)
        if row.method == "classp" or other is None:
            continue
        if not other.train:
            lines.append(f"row {i + 1} ({row.method}): every seed diverged; nothing to pair")
            continue
        for split, what in (("train", "as published"), ("test", "honest")):
            a, b = getattr(ours, split), getattr(other, split)
            paired = stats.paired_difference(a, b, f"CLASSP (row {first + 1})", f"row {i + 1} ({row.method})")
            left_out = sorted(set(ours.diverged) | set(other.diverged))
            note = f" [seeds left out, diverged: {', '.join(map(str, left_out))}]" if left_out else ""
            lines.append(f"{what}: " + stats.verdict(paired, what=f"keeps {spec.report_task} better") + note)
    return (["paired by seed (CLASSP minus the other row, percentage points):"] + lines) if lines else []


_RUN_LINE = re.compile(
    r"^\[\d+/\d+\] (?P<label>.+?) \| (?P<rule>\S+) \| seed (?P<seed>\d+): "
    r"(?:(?P<train>[\d.]+)% \(published eval\), (?P<test>[\d.]+)% \(test\)"
    r"|(?P<status>diverged|stopped) at step)")


def results_from_logs(spec: ReproduceSpec, texts: dict[str, str]) -> tuple[dict, list[int], int]:
    """The per-run lines `reproduce` printed (`[k/n] label | rule | seed s: ...`), from one
    or more outputs (rows run in separate processes or machines), as `reproduce`'s cells.
    Returns (cells, the rows found, the largest number of seeds in a cell)."""
    labels = {row.label: i for i, row in enumerate(spec.rows)}
    results: dict[tuple[int, str | None], Cell] = {}
    for name, text in texts.items():
        for line in text.splitlines():
            m = _RUN_LINE.match(line.strip())
            if not m:
                continue
            if m["label"] not in labels:
                raise UserError(f"{name}: a run of row {m['label']!r}, which {spec.path.name} does not "
                                f"have; give the spec the runs were made with")
            i = labels[m["label"]]
            cell = results.setdefault((i, None if m["rule"] == "-" else m["rule"]), Cell())
            seed = int(m["seed"])
            if m["status"]:
                cell.diverged.append(seed)
            else:
                cell.train[seed], cell.test[seed] = float(m["train"]), float(m["test"])
    if not results:
        raise UserError(f"no run lines found in {', '.join(texts)}; give the output that "
                        f"`classp reproduce` printed")
    seeds = max(len(c.train) + len(c.diverged) for c in results.values())
    return results, sorted({i for i, _ in results}), seeds


def table_from_logs(spec: ReproduceSpec, paths: list[Path], echo=print) -> str:
    texts = {str(path): read_output(path) for path in paths}
    results, picked, seeds = results_from_logs(spec, texts)
    title = f"{spec.name}: accuracy (%) on {spec.report_task} after the last task, from {len(paths)} output(s)"
    table = format_table(spec, results, title, seeds, picked)
    pairs = comparisons(spec, results, picked)
    table = table + ("\n" + "\n".join(pairs) if pairs else "")
    echo(table)
    return table
