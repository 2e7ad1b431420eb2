"""`classp reproduce` for the field's reference tables: rows x scenarios, ACC on the test sets.

A spec (`studies/hsu2018-split-mnist.toml`) names the published table (classp.literature),
the sequence and the reference protocol, the scenarios, and rows; each row names a method,
its parameters, the parameters that differ per scenario (`[rows.scenario_params]`: the
published coefficients were tuned per scenario) and the published row it reruns. Every
row runs on every scenario and seed; each run prints one line, and the table is built from
those lines, so that runs made in several processes rebuild the same table
(`--from-logs`). Per row and scenario the table gives the published mean ± std, ours as
mean ± std [95% bootstrap CI of the mean], whether the published mean lies in our interval,
and ours minus the published mean.

Every run is tracked in MLflow: a parent run per table, a child run per row, scenario and
seed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from classp import stats
from classp.data import DataOptions, load_sequence
from classp.engine import RunConfig
from classp.errors import UserError
from classp.literature import REFERENCE_TABLES
from classp.methods import build_method
from classp.paths import read_output
from classp.population import check_can_train
from classp.reproduce import check_population_size, row_method, row_tables
from classp.scenarios import SCENARIOS
from classp.seed_runs import SeedProgress, tracked_seed_runs
from classp.tomlfile import Table
from classp.tracking import (
    TAG_KIND,
    TAG_METHOD,
    TAG_ROW,
    TAG_SCENARIO,
    TAG_SEQUENCE,
    TAG_STUDY,
    Tracking,
)


@dataclass(frozen=True)
class ScenarioRow:
    label: str
    method: str
    params: dict[str, Any]
    scenario_params: dict[str, dict[str, Any]]
    paper_row: str | None = None

    def params_for(self, scenario: str) -> dict[str, Any]:
        return {**self.params, **self.scenario_params.get(scenario, {})}


@dataclass(frozen=True)
class ScenarioTableSpec:
    path: Path
    name: str
    table: str
    sequence: str
    protocol: str
    seeds: int
    scenarios: tuple[str, ...]
    rows: tuple[ScenarioRow, ...]


def is_scenario_table(top: Table) -> bool:
    """A reproduce spec whose [reproduce] table names scenarios is one of these."""
    return isinstance(top.table.get("reproduce"), dict) and "scenarios" in top.table["reproduce"]


def load_scenario_table_spec(top: Table) -> ScenarioTableSpec:
    top.only({"reproduce", "rows"})
    head = top.sub("reproduce", required=True)
    head.only({"name", "table", "sequence", "protocol", "seeds", "scenarios"})
    table = head.choice("table", REFERENCE_TABLES, required=True)
    reference = REFERENCE_TABLES[table]
    sequence = head.get("sequence", (str,), reference.sequence)
    protocol = head.get("protocol", (str,), reference.protocol)
    if (sequence, protocol) != (reference.sequence, reference.protocol):
        head.fail("sequence", f"{table} was published on {reference.sequence} under protocol "
                              f"{reference.protocol!r}; not {sequence} under {protocol!r}")
    seeds = head.get("seeds", (int,), reference.runs)
    if seeds < 1:
        head.fail("seeds", f"expected a positive integer, got {seeds!r}")
    scenarios = tuple(head.get("scenarios", (list,), required=True))
    for scenario in scenarios:
        if scenario not in SCENARIOS:
            head.fail("scenarios", f"unknown scenario {scenario!r}; allowed: {', '.join(SCENARIOS)}")
    if not scenarios:
        head.fail("scenarios", "empty; name at least one scenario")
    rows = []
    for i, row in enumerate(row_tables(top)):
        row.only({"label", "method", "params", "scenario_params", "paper_row"})
        method, params = row_method(row)
        per_scenario = row.sub("scenario_params")
        per_scenario.only(set(scenarios))
        scenario_params = {s: dict(per_scenario.get(s, (dict,), {})) for s in scenarios}
        for scenario in scenarios:
            try:
                build_method(method, {**params, **scenario_params[scenario]})
            except UserError as exc:
                row.fail("params", f"{scenario}: {exc}")
        paper_row = row.get("paper_row", (str,), None)
        if paper_row is not None and paper_row not in reference.rows:
            row.fail("paper_row", f"{paper_row!r} is not a row of {table}; allowed: "
                                  f"{', '.join(reference.rows)}")
        rows.append(ScenarioRow(row.get("label", (str,), f"row {i + 1}"), method, params,
                                scenario_params, paper_row))
    if not rows:
        top.fail("rows", "no rows; add [[rows]] tables")
    labels = [r.label for r in rows]
    if len(set(labels)) != len(labels):
        top.fail("rows", "two rows share a label; the printed runs are matched to rows by it")
    return ScenarioTableSpec(top.path, head.get("name", (str,), top.path.stem), table, sequence,
                             protocol, seeds, scenarios, tuple(rows))


def select_scenarios(spec: ScenarioTableSpec, selection: str | None) -> tuple[str, ...]:
    if not selection:
        return spec.scenarios
    picked = tuple(s.strip() for s in selection.split(","))
    for scenario in picked:
        if scenario not in spec.scenarios:
            raise UserError(f"--scenarios: {scenario!r} is not a scenario of {spec.path.name} "
                            f"({', '.join(spec.scenarios)})")
    return picked


# ----------------------------------------------------------------------------------------
# Running the table
# ----------------------------------------------------------------------------------------


@dataclass
class Cell:
    """One row in one scenario: ACC (%) on the test sets, per seed."""

    acc: dict[int, float] = field(default_factory=dict)
    diverged: list[int] = field(default_factory=list)


def reproduce_scenarios(spec: ScenarioTableSpec, seeds: int | None = None, subsample: float = 1.0,
                        data_dir: Path | None = None, download: bool = False,
                        tracking_uri: str | None = None, device: str = "auto",
                        rows: list[int] | None = None, scenarios: str | None = None,
                        echo=print, population: int = 1) -> str:
    seeds = seeds if seeds is not None else spec.seeds
    if seeds < 1:
        raise UserError(f"--seeds must be at least 1, got {seeds}")
    check_population_size(population)
    if not 0 < subsample <= 1:
        raise UserError(f"--subsample must be in (0, 1], got {subsample}")
    picked = rows if rows is not None else list(range(len(spec.rows)))
    chosen = select_scenarios(spec, scenarios)
    tracking = Tracking(tracking_uri)
    tracking.check()
    sequences = {s: load_sequence(spec.sequence, DataOptions(
        data_dir=data_dir, download=download, subsample=subsample, protocol=spec.protocol,
        scenario=s)) for s in chosen}
    if population > 1:  # refused before anything is recorded
        for i in picked:
            for s in chosen:
                check_can_train(RunConfig(sequence=spec.sequence, method=spec.rows[i].method,
                                          method_params=spec.rows[i].params_for(s),
                                          protocol=spec.protocol, scenario=s), sequences[s])
    experiment_id = tracking.experiment(spec.sequence)
    parent = tracking.parent_run(experiment_id, spec.name, {TAG_SEQUENCE: spec.sequence,
                                                             TAG_KIND: "study"})
    cells: dict[tuple[int, str], Cell] = {}
    progress = SeedProgress(len(picked) * len(chosen) * seeds, echo)
    with tracking.ending_on_error(parent):
        for i in picked:
            row = spec.rows[i]
            for scenario in chosen:
                cell = cells.setdefault((i, scenario), Cell())
                def describe(seed: int, i=i, row=row, scenario=scenario):
                    return (f"row{i + 1}-{row.method}-{scenario}-seed{seed}",
                            {TAG_KIND: "reproduce", TAG_STUDY: spec.name, TAG_METHOD: row.method,
                             TAG_SEQUENCE: spec.sequence, TAG_ROW: row.label,
                             TAG_SCENARIO: scenario},
                            RunConfig(sequence=spec.sequence, method=row.method,
                                      method_params=row.params_for(scenario), seed=seed,
                                      device=device, eval_splits=("test",), subsample=subsample,
                                      track_updates=True, protocol=spec.protocol, scenario=scenario),
                            {"row": row.label, "subsample": subsample, "reproduce": spec.name})

                for seed, result in tracked_seed_runs(tracking, experiment_id, parent, list(range(seeds)),
                                                      population, sequences[scenario], describe):
                    def record(result, seed=seed, cell=cell):
                        cell.acc[seed] = 100 * result.metrics["test"]["acc"]
                        return f"{cell.acc[seed]:.2f}% (ACC, test)"
                    progress(f"{row.label} | {scenario}", seed, result, record, cell.diverged)
    title = _title(spec, f"subsample {subsample:g} of every split" if subsample < 1 else "full data")
    table = format_scenario_table(spec, cells, title, seeds, chosen)
    echo(table)
    tracking.client.log_text(parent, table, "reproduce_table.txt")
    tracking.client.set_terminated(parent, "FINISHED")
    return table


def _title(spec: ScenarioTableSpec, scale: str) -> str:
    return (f"{spec.name}: ACC (%), the mean test accuracy over all tasks after the last; "
            f"{spec.sequence}, protocol {spec.protocol}, {scale}")


def _ours(cell: Cell | None) -> str:
    if cell is None or (not cell.acc and not cell.diverged):
        return "not run"
    if not cell.acc:
        return f"diverged ({len(cell.diverged)} of {len(cell.diverged)})"
    text = stats.summarize(list(cell.acc.values())).short()
    if cell.diverged:
        text += f" ({len(cell.diverged)} of {len(cell.acc) + len(cell.diverged)} diverged)"
    return text


def format_scenario_table(spec: ScenarioTableSpec, cells: dict, title: str, seeds: int,
                          scenarios: tuple[str, ...] | None = None) -> str:
    reference = REFERENCE_TABLES[spec.table]
    header = ["row", "scenario", f"paper (n={reference.runs})", "ours", "paper in CI?",
              "ours - paper [95% CI]"]
    lines = []
    for scenario in scenarios or spec.scenarios:
        for i, row in enumerate(spec.rows):
            cell = cells.get((i, scenario))
            if cell is None:
                continue
            paper, inside, gap = "(not in the paper)", "-", "-"
            if row.paper_row is not None:
                mean, std = reference.rows[row.paper_row][scenario]
                paper = f"{mean:.2f} ± {std:.2f}"
                summary = stats.summarize(list(cell.acc.values()))
                if summary.n >= 2:
                    inside = "yes" if summary.contains(mean) else "no"
                if summary.n >= 1:
                    gap = f"{summary.mean - mean:+.2f}"
                if summary.n >= 2:
                    low, high = stats.welch_interval(summary, mean, reference.sample_std(std),
                                                     reference.runs)
                    gap += f" [{low:+.2f}, {high:+.2f}]"
            lines.append([row.label, scenario, paper, _ours(cell), inside, gap])
    widths = [max(len(r[c]) for r in [header, *lines]) for c in range(len(header))]
    out = [title,
           f"paper: mean ± std over {reference.runs} runs, {reference.source}",
           f"ours: mean ± std [95% bootstrap CI of the mean] over {seeds} seed(s) (0 to {seeds - 1}); "
           f"paper in CI?: the published mean inside our interval; ours - paper: the difference "
           f"of the means with its 95% Welch interval (both spreads, the published std as n - 1)",
           "  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip()]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in lines]
    return "\n".join(out)


_RUN_LINE = re.compile(
    r"^\[\d+/\d+\] (?P<label>.+?) \| (?P<scenario>\S+) \| seed (?P<seed>\d+): "
    r"(?:(?P<acc>[\d.]+)% \(ACC, test\)|(?P<status>diverged|stopped) at step)")


def scenario_table_from_logs(spec: ScenarioTableSpec, paths: list[Path], echo=print) -> str:
    """The table rebuilt from the per-run lines that one or more runs of `reproduce` printed."""
    labels = {row.label: i for i, row in enumerate(spec.rows)}
    cells: dict[tuple[int, str], Cell] = {}
    for path in paths:
        text = read_output(path)
        for line in text.splitlines():
            m = _RUN_LINE.match(line.strip())
            if not m:
                continue
            if m["label"] not in labels or m["scenario"] not in spec.scenarios:
                raise UserError(f"{path}: a run of {m['label']!r} in scenario {m['scenario']!r}, "
                                f"which {spec.path.name} does not have; give the spec the runs "
                                f"were made with")
            cell = cells.setdefault((labels[m["label"]], m["scenario"]), Cell())
            if m["status"]:
                cell.diverged.append(int(m["seed"]))
            else:
                cell.acc[int(m["seed"])] = float(m["acc"])
    if not cells:
        raise UserError(f"no run lines found in {', '.join(map(str, paths))}; give the output "
                        f"that `classp reproduce` printed")
    seeds = max(len(c.acc) + len(c.diverged) for c in cells.values())
    title = _title(spec, f"from {len(paths)} output(s)")
    table = format_scenario_table(spec, cells, title, seeds)
    echo(table)
    return table
