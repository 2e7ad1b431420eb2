"""`classp reproduce`: the paper's tables, rerun as published and as specified.

Every CLASSP row runs twice: with `rule="reference-code"` (what the published code did)
and with `rule="algorithm"` (what the paper's Algorithm 1 says). Every run is evaluated
on the training sets (as the paper did) and on held-out test sets, tracked in MLflow (a
parent run per table, a child run per row, rule and seed), and the table is printed
beside the paper's published numbers.
"""

from __future__ import annotations

import gzip
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from classp.data import SEQUENCES, DataOptions, load_sequence
from classp.engine import RunConfig, run
from classp.errors import UserError
from classp.methods import METHODS, build_method
from classp.tomlfile import read_toml
from classp.tracking import TAG_KIND, TAG_METHOD, TAG_RULE, TAG_SEQUENCE, RunLogger, Tracking

RULES_COMPARED = ("reference-code", "algorithm")


@dataclass(frozen=True)
class Row:
    label: str
    method: str
    params: dict[str, Any]
    paper_mean: float | None = None
    paper_std: float | None = None
    assumed: tuple[str, ...] = ()

    @property
    def rules(self) -> tuple[str | None, ...]:
        return RULES_COMPARED if self.method == "classp" else (None,)


@dataclass(frozen=True)
class ReproduceSpec:
    path: Path
    name: str
    sequence: str
    seeds: int
    report_task: str
    rows: tuple[Row, ...] = field(default_factory=tuple)


def load_reproduce_spec(path: str | Path) -> ReproduceSpec:
    path, data = read_toml(path, "reproduce spec", "studies/paper-table1.toml")

    def fail(key: str, problem: str):
        raise UserError(f"{path}: {key}: {problem}")

    for key in data:
        if key not in ("reproduce", "rows"):
            fail(key, "unknown table; allowed: reproduce, rows")
    head = data.get("reproduce")
    if not isinstance(head, dict):
        fail("reproduce", "missing; it is required")
    for key in head:
        if key not in ("name", "sequence", "seeds", "report_task"):
            fail(f"reproduce.{key}", "unknown key; allowed here: name, report_task, seeds, sequence")
    sequence = head.get("sequence")
    if sequence not in SEQUENCES:
        fail("reproduce.sequence", f"unknown sequence {sequence!r}; allowed: {', '.join(SEQUENCES)}")
    seeds = head.get("seeds", 10)
    if not isinstance(seeds, int) or isinstance(seeds, bool) or seeds < 1:
        fail("reproduce.seeds", f"expected a positive integer, got {seeds!r}")
    rows = []
    for i, raw in enumerate(data.get("rows", [])):
        where = f"rows[{i}]"
        allowed = {"label", "method", "params", "paper_mean", "paper_std", "assumed"}
        for key in raw:
            if key not in allowed:
                fail(f"{where}.{key}", f"unknown key; allowed here: {', '.join(sorted(allowed))}")
        method = raw.get("method")
        if method not in METHODS:
            fail(f"{where}.method", f"unknown method {method!r}; allowed: {', '.join(METHODS)}")
        params = dict(raw.get("params", {}))
        if "rule" in params:
            fail(f"{where}.params.rule", "set by reproduce (both rules are run); remove it")
        try:
            build_method(method, {**params, **({"rule": "algorithm"} if method == "classp" else {})})
        except UserError as exc:
            fail(f"{where}.params", str(exc))
        for key in ("paper_mean", "paper_std"):
            if key in raw and not isinstance(raw[key], (int, float)):
                fail(f"{where}.{key}", f"expected a number (%), got {raw[key]!r}")
        rows.append(Row(label=str(raw.get("label", f"row {i + 1}")), method=method, params=params,
                        paper_mean=raw.get("paper_mean"), paper_std=raw.get("paper_std"),
                        assumed=tuple(raw.get("assumed", ()))))
    if not rows:
        fail("rows", "no rows; add [[rows]] tables")
    return ReproduceSpec(path, str(head.get("name", path.stem)), sequence, seeds,
                         str(head.get("report_task", "")), tuple(rows))


# ----------------------------------------------------------------------------------------
# MNIST's test set standing in for its training set
# ----------------------------------------------------------------------------------------


def _read_idx(path: Path) -> np.ndarray:
    raw = gzip.open(path).read() if path.suffix == ".gz" else path.read_bytes()
    dims = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims))
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def _write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def stage_mnist_stand_in(source: Path, root: Path, train_count: int = 8000) -> Path:
    """Lay MNIST's 10k test set out as a small MNIST in torchvision's layout: its first
    `train_count` images as the training set, the rest as the held-out test set (so the
    test column stays held out). Returns the data root."""
    images = [source / f"t10k-images-idx3-ubyte{s}" for s in (".gz", "")]
    labels = [source / f"t10k-labels-idx1-ubyte{s}" for s in (".gz", "")]
    image_file = next((p for p in images if p.exists()), None)
    label_file = next((p for p in labels if p.exists()), None)
    if image_file is None or label_file is None:
        raise UserError(f"no MNIST test set in {source}: expected t10k-images-idx3-ubyte(.gz) "
                        f"and t10k-labels-idx1-ubyte(.gz) there")
    x, y = _read_idx(image_file), _read_idx(label_file)
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for name, array in (("train-images-idx3-ubyte", x[:train_count]),
                        ("train-labels-idx1-ubyte", y[:train_count]),
                        ("t10k-images-idx3-ubyte", x[train_count:]),
                        ("t10k-labels-idx1-ubyte", y[train_count:])):
        _write_idx(raw / name, array)
    return root


# ----------------------------------------------------------------------------------------
# Running the table
# ----------------------------------------------------------------------------------------


@dataclass
class Cell:
    train: list[float] = field(default_factory=list)  # % on the reported task, per seed
    test: list[float] = field(default_factory=list)
    diverged: int = 0


def reproduce(spec: ReproduceSpec, seeds: int | None = None, subsample: float = 1.0,
              data_dir: Path | None = None, download: bool = False,
              mnist_stand_in: Path | None = None, tracking_uri: str | None = None,
              device: str = "auto", echo=print) -> dict:
    seeds = seeds or spec.seeds
    if seeds < 1:
        raise UserError(f"--seeds must be at least 1, got {seeds}")
    if not 0 < subsample <= 1:
        raise UserError(f"--subsample must be in (0, 1], got {subsample}")
    tracking = Tracking(tracking_uri)
    tracking.check()
    notes = []
    if mnist_stand_in is not None:
        from classp.tracking import home

        data_dir = stage_mnist_stand_in(Path(mnist_stand_in), home() / "mnist-stand-in")
        notes.append("MNIST's 10k test set stands in for MNIST (8,000 to train, 2,000 held out)")
    sequence = load_sequence(spec.sequence, DataOptions(data_dir=data_dir, download=download,
                                                        subsample=subsample))
    task_names = [t.name for t in sequence.tasks]
    if spec.report_task not in task_names:
        raise UserError(f"{spec.path}: reproduce.report_task: {spec.report_task!r} is not a task of "
                        f"{spec.sequence} ({', '.join(task_names)})")
    column = task_names.index(spec.report_task)
    experiment_id = tracking.experiment(spec.sequence)
    parent = tracking.parent_run(experiment_id, spec.name, {TAG_SEQUENCE: spec.sequence,
                                                             TAG_KIND: "study"})
    results: dict[tuple[int, str | None], Cell] = {}
    total = sum(len(r.rules) for r in spec.rows) * seeds
    done = 0
    for i, row in enumerate(spec.rows):
        for rule in row.rules:
            cell = results.setdefault((i, rule), Cell())
            params = {**row.params, **({"rule": rule} if rule else {})}
            for seed in range(seeds):
                run_id = tracking.child_run(experiment_id, parent, f"row{i + 1}-{rule or row.method}-seed{seed}", {
                    TAG_KIND: "reproduce", "classp.study": spec.name, TAG_METHOD: row.method,
                    TAG_SEQUENCE: spec.sequence, TAG_RULE: rule or "-", "classp.row": row.label})
                config = RunConfig(sequence=spec.sequence, method=row.method, method_params=params,
                                   seed=seed, device=device, eval_splits=("test",), eval_train=True,
                                   subsample=subsample, track_updates=True)
                logger = RunLogger(tracking.client, run_id, extra_params={
                    "row": row.label, "subsample": subsample, "reproduce": spec.name})
                result = run(config, [logger], sequence=sequence)
                tracking.finish(run_id, result.status if result.status != "stopped" else "failed")
                if result.status != "finished":
                    cell.diverged += 1
                else:
                    cell.train.append(100 * result.accuracy["train"][-1][column])
                    cell.test.append(100 * result.accuracy["test"][-1][column])
                done += 1
                echo(f"[{done}/{total}] {row.label} | {rule or '-'} | seed {seed}: "
                     + (f"{cell.train[-1]:.2f}% (train)" if result.status == "finished" else result.status))
    title = (f"{spec.name}: accuracy (%) on {spec.report_task} after the last task, mean +- std over "
             f"{seeds} seed(s); {spec.sequence}" + (f", subsample {subsample:g}" if subsample < 1 else "")
             + "".join(f"; {n}" for n in notes))
    table = format_table(spec, results, title)
    echo(table)
    tracking.client.log_text(parent, table, "reproduce_table.txt")
    tracking.client.set_terminated(parent, "FINISHED")
    return {"title": title, "table": table, "cells": results}


def _fmt(values: list[float], diverged: int) -> str:
    if not values:
        return "diverged" if diverged else "-"
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    text = f"{mean:.2f} +- {std:.2f}"
    return text + (f" ({diverged} div.)" if diverged else "")


def format_table(spec: ReproduceSpec, results: dict, title: str) -> str:
    header = ["row", "paper (train)", "ours ref-code (train)", "ours algorithm (train)",
              "ours ref-code (test)", "ours algorithm (test)"]
    lines = []
    for i, row in enumerate(spec.rows):
        paper = "not known here" if row.paper_mean is None else (
            f"{row.paper_mean:.2f}" + (f" +- {row.paper_std:.2f}" if row.paper_std is not None else ""))
        if row.method == "classp":
            ref, alg = results.get((i, "reference-code")), results.get((i, "algorithm"))
            cells = [_fmt(ref.train, ref.diverged), _fmt(alg.train, alg.diverged),
                     _fmt(ref.test, ref.diverged), _fmt(alg.test, alg.diverged)]
        else:  # no rule to choose: one set of runs, shown once
            only = results.get((i, None))
            cells = [_fmt(only.train, only.diverged), "(no rule)", _fmt(only.test, only.diverged),
                     "(no rule)"]
        label = row.label + (f" [assumed: {', '.join(row.assumed)}]" if row.assumed else "")
        lines.append([label, paper, *cells])
    widths = [max(len(r[c]) for r in [header, *lines]) for c in range(len(header))]
    out = [title, "  ".join(h.ljust(w) for h, w in zip(header, widths))]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in lines]
    return "\n".join(out)
