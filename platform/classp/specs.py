"""Study specs: TOML files parsed into frozen dataclasses, validated as a whole.

Every problem is reported as `UserError("<file>: <key>: <what is wrong>; <what is allowed>")`
before anything runs. A spec looks like `studies/split-digits.toml`:

    [study]
    name = "split-digits"
    sequence = "split-digits"
    methods = ["classp", "ewc"]
    objective = "accuracy"          # or "old-new": two objectives, a Pareto front
    n_trials = 8
    seeds = [0]                      # seeds each trial runs (the objective is their mean)
    confirm_seeds = [1000, 1001, 1002]

    [run]                            # RunConfig settings shared by every trial
    epochs = 5

    [sampler]
    name = "tpe"
    seed = 0

    [pruner]
    name = "median"

    [methods.classp]
    fixed = { schedule = "paper" }
    paper = { lr = 0.2, threshold = 0.5, power = 1.0, eps = 1e-5 }   # the first trial
    [methods.classp.search]
    lr = { low = 1e-3, high = 1.0, log = true }
    threshold = { low = 1e-8, high = 1.0, log = true, none = true }  # or no threshold
    power = { choices = [1.0, 2.0] }
"""

from __future__ import annotations

import math
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

from classp.data import SEQUENCES, task_count
from classp.errors import UserError
from classp.methods import METHODS
from classp.run_config import (
    SPLITS,
    RunConfig,
    check_config,
    check_seed,
    data_options,
    run_settings,
)
from classp.tomlfile import Table, read_toml
from classp.tracking import check_name
from classp.tuning_protocols import TUNING_PROTOCOLS, Tuning

OBJECTIVES = ("accuracy", "old-new")
SAMPLERS = ("tpe", "random")
PRUNERS = ("none", "median")


@dataclass(frozen=True)
class FloatRange:
    low: float
    high: float
    log: bool = False
    none: bool = False  # also offer "none" (0): e.g. no threshold at all


@dataclass(frozen=True)
class Choice:
    choices: tuple


Distribution = FloatRange | Choice


@dataclass(frozen=True)
class MethodSpec:
    name: str
    search: dict[str, Distribution]
    fixed: dict[str, Any] = field(default_factory=dict)
    paper: dict[str, Any] | None = None  # the paper's own settings: enqueued as the first trial


@dataclass(frozen=True)
class StudySpec:
    path: Path
    name: str
    sequence: str
    methods: tuple[MethodSpec, ...]
    objective: str = "accuracy"
    n_trials: int | None = 20
    timeout_minutes: float | None = None
    # Trials trained together as one batched model (classp.population); 1: one at a time.
    population: int = 1
    seeds: tuple[int, ...] = (0,)
    confirm_seeds: tuple[int, ...] = (1000, 1001, 1002, 1003, 1004)
    run: dict[str, Any] = field(default_factory=dict)
    sampler: str = "tpe"
    sampler_seed: int | None = 0
    pruner: str = "none"
    pruner_startup_trials: int = 3
    tune_split: str = "val"
    tuning: Tuning = Tuning()

    @property
    def directions(self) -> list[str]:
        return ["maximize"] if self.objective == "accuracy" else ["maximize", "maximize"]

    def method(self, name: str) -> MethodSpec:
        for m in self.methods:
            if m.name == name:
                return m
        raise UserError(f"{self.path}: method {name!r} is not in this study; it has: "
                        f"{', '.join(m.name for m in self.methods)}")

    def study_name(self, method: str) -> str:
        return f"{self.name}.{method}"


# A spec's defaults are the dataclasses' own: declared once, above.
DEFAULT = {f.name: f.default for f in fields(StudySpec) if f.default is not MISSING}
DEFAULT_CONFIRM_SEEDS = list(DEFAULT["confirm_seeds"])  # five at least: a paired verdict needs a spread


def load_spec(path: str | Path) -> StudySpec:
    path, data = read_toml(path, "study spec", "studies/split-digits.toml")
    return parse_spec(data, path)


def parse_spec(data: dict, path: Path) -> StudySpec:
    top = Table(path, data, "")
    top.only({"study", "run", "sampler", "pruner", "methods", "tuning"})

    study = top.sub("study", required=True)
    study.only({"name", "sequence", "methods", "objective", "n_trials", "timeout_minutes",
                "population", "seeds", "confirm_seeds", "tune_split"})
    name = study.get("name", (str,), required=True)
    try:
        check_name(name, "the study name")
    except UserError as exc:
        study.fail("name", str(exc))
    sequence = study.choice("sequence", SEQUENCES, required=True)
    objective = study.choice("objective", OBJECTIVES, DEFAULT["objective"])
    n_trials = study.get("n_trials", (int,), DEFAULT["n_trials"])
    if n_trials is not None and n_trials < 1:
        study.fail("n_trials", f"must be at least 1, got {n_trials}")
    timeout = study.get("timeout_minutes", (float, int), DEFAULT["timeout_minutes"])
    if timeout is not None and not (math.isfinite(timeout) and timeout > 0):
        study.fail("timeout_minutes", f"must be a positive number of minutes, got {timeout}")
    population = study.get("population", (int,), DEFAULT["population"])
    if population < 1:
        study.fail("population", f"must be at least 1 (1: one trial at a time), got {population}")
    seeds = _int_list(study, "seeds", list(DEFAULT["seeds"]))
    confirm = _int_list(study, "confirm_seeds", DEFAULT_CONFIRM_SEEDS)
    shared = sorted(set(seeds) & set(confirm))
    if shared:
        study.fail("confirm_seeds", f"seed {shared[0]} is also a tuning seed; confirmation "
                                    f"seeds must never be used in tuning")
    tune_split = study.choice("tune_split", SPLITS, DEFAULT["tune_split"], what="split")

    run = _run_settings(top.sub("run"))
    try:  # the engine's own checks, once, before any trial is written
        check_config(RunConfig(sequence=sequence, **run))
    except UserError as exc:
        top.fail("run", str(exc))
    tuning = _tuning(top.sub("tuning"), sequence, run)

    sampler_t = top.sub("sampler")
    sampler_t.only({"name", "seed"})
    sampler = sampler_t.choice("name", SAMPLERS, DEFAULT["sampler"], what="sampler")
    sampler_seed = sampler_t.get("seed", (int,), DEFAULT["sampler_seed"])
    if not 0 <= sampler_seed < 2**32:  # numpy's seed range, which Optuna's samplers use
        sampler_t.fail("seed", f"must be between 0 and 2**32 - 1, got {sampler_seed}")

    pruner_t = top.sub("pruner")
    pruner_t.only({"name", "n_startup_trials"})
    pruner = pruner_t.choice("name", PRUNERS, DEFAULT["pruner"], what="pruner")
    if pruner != "none" and objective != "accuracy":
        pruner_t.fail("name", "pruning needs a single objective; use name = \"none\" with "
                              "objective \"old-new\"")
    startup = pruner_t.get("n_startup_trials", (int,), DEFAULT["pruner_startup_trials"])
    if startup < 0:
        pruner_t.fail("n_startup_trials", f"must be 0 or more, got {startup}")

    method_tables = top.sub("methods", required=True)
    listed = study.get("methods", (list,), None)
    if listed is None:  # not given: every [methods.*] table
        listed = list(method_tables.table)
    if not listed:
        study.fail("methods", "no methods to tune; name at least one")
    methods = []
    for method in listed:
        if not isinstance(method, str) or method not in METHODS:
            study.fail("methods", f"unknown method {method!r}; allowed: {', '.join(METHODS)}")
        methods.append(_method_spec(method_tables, method))
    for extra in method_tables.table:
        if extra not in METHODS:
            method_tables.fail(extra, f"unknown method; allowed: {', '.join(METHODS)}")

    return StudySpec(path=path, name=name, sequence=sequence, methods=tuple(methods),
                     objective=objective, n_trials=n_trials, timeout_minutes=timeout,
                     population=population, seeds=tuple(seeds), confirm_seeds=tuple(confirm), run=run, sampler=sampler,
                     sampler_seed=sampler_seed, pruner=pruner, pruner_startup_trials=startup,
                     tune_split=tune_split, tuning=tuning)


def _tuning(table: Table, sequence: str, run: dict[str, Any]) -> Tuning:
    """The [tuning] table: the protocol and what it needs, checked against the stream."""
    table.only({"protocol", "tasks", "stream"})
    protocol = table.get("protocol", (str,), Tuning.protocol)
    if protocol not in TUNING_PROTOCOLS:
        table.fail("protocol", f"unknown tuning protocol {protocol!r}; allowed: "
                               f"{', '.join(TUNING_PROTOCOLS)}")
    tasks = table.get("tasks", (int,), None)
    stream = table.get("stream", (str,), None)
    if protocol != "first-tasks" and tasks is not None:
        table.fail("tasks", f"is for protocol = \"first-tasks\", not {protocol!r}")
    if protocol != "held-out-stream" and stream is not None:
        table.fail("stream", f"is for protocol = \"held-out-stream\", not {protocol!r}")
    if protocol == "first-tasks":
        total = task_count(sequence, data_options(RunConfig(sequence=sequence, **run)))
        if tasks is None or not 1 <= tasks <= total - 2:
            table.fail("tasks", f"{sequence} has {total} tasks; first-tasks tunes on the first "
                                f"K and reports the rest, an old task and a new one at least: "
                                f"give 1 <= tasks <= {total - 2}, got {tasks}")
    if protocol == "held-out-stream":
        if stream is None:
            table.fail("stream", f"name the stream the trials tune on, a sequence that shares no "
                                 f"task with {sequence} (e.g. its sibling dataset)")
        if stream not in SEQUENCES:
            table.fail("stream", f"unknown sequence {stream!r}; allowed: {', '.join(SEQUENCES)}")
        if stream == sequence:
            table.fail("stream", f"is the reported stream {sequence} itself; a held-out stream "
                                 f"shares no task with it (e.g. its sibling dataset)")
        try:
            check_config(RunConfig(sequence=stream, **run))
        except UserError as exc:
            table.fail("stream", f"{stream} with the spec's [run]: {exc}")
    return Tuning(protocol, tasks, stream)


def _int_list(reader: Table, key: str, default: list[int]) -> list[int]:
    values = reader.get(key, (list,), default)
    if not values or not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        reader.fail(key, f"expected a non-empty list of integers, got {values!r}")
    if len(set(values)) != len(values):
        reader.fail(key, f"seeds repeat in {values!r}; give distinct seeds")
    for value in values:
        try:
            check_seed(value)
        except UserError as exc:
            reader.fail(key, str(exc))
    return list(values)


def _run_settings(run: Table) -> dict[str, Any]:
    """The [run] table: its keys and types from RunConfig's fields; their values are
    checked by the engine's own `check_config`, below."""
    allowed = run_settings()
    run.only(set(allowed))
    out = {key: run.get(key, allowed[key]) for key in run.table}
    return {k: tuple(v) if isinstance(v, list) else v for k, v in out.items()}


def _method_spec(tables: Table, name: str) -> MethodSpec:
    table = tables.sub(name)
    table.only({"search", "fixed", "paper"})
    defaults = METHODS[name].defaults
    search_t = table.sub("search")
    search: dict[str, Distribution] = {}
    for key in search_t.table:
        if key not in defaults:
            search_t.fail(key, f"method {name!r} has no such parameter; its parameters: "
                               f"{', '.join(defaults)}")
        search[key] = _distribution(search_t.sub(key))
    fixed_t = table.sub("fixed")
    for key in fixed_t.table:
        if key not in defaults:
            fixed_t.fail(key, f"method {name!r} has no such parameter; its parameters: "
                              f"{', '.join(defaults)}")
        if key in search:
            fixed_t.fail(key, "is also searched; fix it or search it, not both")
    fixed = dict(fixed_t.table)
    paper = None
    if "paper" in table.table:
        paper_t = table.sub("paper")
        paper = dict(paper_t.table)
        for key, value in paper.items():
            if key not in search:
                paper_t.fail(key, f"not a searched parameter; the paper trial sets searched "
                                  f"parameters only ({', '.join(search) or 'none'})")
            if not _inside(search[key], value):
                paper_t.fail(key, f"{value!r} lies outside the search space {search[key]}")
    _check_method_builds(table, name, fixed, search)
    return MethodSpec(name=name, search=search, fixed=fixed, paper=paper)


def _distribution(r: Table) -> Distribution:
    if "choices" in r.table:
        r.only({"choices"})
        choices = r.get("choices", (list,))
        if not choices:
            r.fail("choices", "give at least one choice")
        return Choice(tuple(choices))
    r.only({"low", "high", "log", "none"})
    low = r.get("low", (float, int), required=True)
    high = r.get("high", (float, int), required=True)
    log = r.get("log", (bool,), False)
    none = r.get("none", (bool,), False)
    if not (math.isfinite(low) and math.isfinite(high)):
        r.fail(None, "low and high must be finite numbers")
    if low > high:
        r.fail(None, f"low {low:g} > high {high:g}; give low <= high")
    if log and low <= 0:
        r.fail("low", f"a log scale needs low > 0, got {low:g}")
    return FloatRange(float(low), float(high), log, none)


def _inside(dist: Distribution, value) -> bool:
    if isinstance(dist, Choice):
        return value in dist.choices
    if dist.none and value in (0, 0.0, None, "none"):
        return True
    return isinstance(value, (int, float)) and dist.low <= value <= dist.high


def _check_method_builds(table: Table, name: str, fixed: dict, search: dict) -> None:
    """Build the method with the fixed values, then with each choice and both ends of each
    range, so that a bad value fails now, named where it is written, rather than in a trial."""
    from classp.methods import build_method

    def builds(params: dict, where: Table, key: str) -> None:
        try:
            build_method(name, params)
        except UserError as exc:
            where.fail(key, str(exc))

    builds(dict(fixed), table, "fixed")
    search_t = table.sub("search")
    for key, dist in search.items():
        values = dist.choices if isinstance(dist, Choice) else (
            (dist.low, dist.high) + ((0.0,) if dist.none else ()))
        for value in values:
            builds({**fixed, key: value}, search_t, key)
