"""What each `classp` command does, once its arguments are parsed (classp.cli builds the
parser and reports errors in one line)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from classp.errors import UserError
from classp.tomlfile import read_spec


def _parse_value(text: str) -> Any:
    """`--param key=value`: numbers, true/false and strings."""
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def _method_params(args) -> dict[str, Any]:
    params = {key.removeprefix("method."): value for key, value in vars(args).items()
              if key.startswith("method.") and value is not None}
    for item in args.param:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"--param takes KEY=VALUE, got {item!r}")
        params[key.replace("-", "_")] = _parse_value(value)
    return params


def choose_threads() -> None:
    """A training command picks its threads before torch loads OpenMP (classp.threads)."""
    from classp import threads

    threads.apply(threads.choose())


def run_command(args) -> int:  # threads chosen in main, before the method flags import torch
    from classp.engine import RunConfig, run

    config = RunConfig(
        sequence=args.sequence, method=args.method, method_params=_method_params(args),
        model=args.model, epochs=tuple(args.epochs) if args.epochs else None,
        batch_size=args.batch_size, shuffle=args.shuffle, seed=args.seed, device=args.device,
        data_dir=args.data_dir, download=args.download, subsample=args.subsample,
        num_tasks=args.num_tasks, eval_train=args.eval_train, protocol=args.protocol,
        loss_targets=tuple(args.loss_targets) if args.loss_targets else None,
        imdb_labels=args.imdb_labels, scenario=args.scenario,
        progress=not args.no_progress and sys.stderr.isatty(),
        step_mode=args.step_mode,
    )
    result = run(config)
    if args.json:
        from dataclasses import asdict

        print(json.dumps(asdict(result), default=str, indent=2))
    else:
        print(format_result(result))
    return 0 if result.status == "finished" else 1


def format_result(result) -> str:
    lines = [f"{result.config.method} on {result.config.sequence}: {result.status}, "
             f"{result.steps} steps, {result.seconds:.1f} s, {result.num_parameters:,} parameters, "
             f"state kept across tasks {result.state_bytes:,} bytes"]
    lines += [f"note: {n}" for n in result.notes]
    if result.diverged_at:
        lines.append(f"diverged: non-finite loss at step {result.diverged_at['step']} "
                     f"(task {result.diverged_at['task'] + 1})")
    names = result.task_names
    for split, R in result.accuracy.items():
        lines.append(f"\naccuracy on the {split} split (row: after training task; column: task)")
        labels = ["untrained"] + [f"{i}:{n}" for i, n in enumerate(names, 1)]
        width = max(map(len, labels)) + 1
        lines.append(" " * width + "".join(f"{n:>12}" for n in names))
        for label, row in zip(labels, R):
            lines.append(f"{label:<{width}}" + "".join(f"{a:>12.4f}" for a in row))
        if split in result.metrics:
            m = result.metrics[split]
            lines.append("  " + "  ".join(f"{k}={m[k]:+.4f}" for k in ("acc", "bwt", "forgetting", "fwt")))
    return "\n".join(lines)


def list_command(args) -> int:
    from classp.data import PROTOCOL_SEQUENCES, SEQUENCES, SPLIT_SEQUENCES
    from classp.methods import METHODS
    from classp.methods.params import describe
    from classp.models import MODELS
    from classp.scenarios import SCENARIOS

    print("sequences: " + ", ".join(SEQUENCES))
    print(f"scenarios: {', '.join(SCENARIOS)} (split sequences: {', '.join(SPLIT_SEQUENCES)}; "
          f"the others are domain-incremental by construction)")
    print("protocols: " + ", ".join(PROTOCOL_SEQUENCES) + " (" + "; ".join(
        f"{p}: {', '.join(seqs)}" for p, seqs in PROTOCOL_SEQUENCES.items() if seqs) + ")")
    print("methods:   " + ", ".join(METHODS))
    for name, cls in METHODS.items():
        print(f"  {name}: {describe(cls.PARAMS)}")
    print("models:    " + ", ".join(MODELS))
    return 0


def _with_population(spec, population: int | None):
    """The spec, with --population in place of its own when given."""
    import dataclasses

    if population is None:
        return spec
    if population < 1:
        raise UserError(f"--population must be at least 1 (1: one trial at a time), got {population}")
    return dataclasses.replace(spec, population=population)


def study_run_command(args) -> int:
    if args.workers == 1:  # with --workers, each worker gets its share (classp.workers)
        choose_threads()
    from classp.specs import load_spec
    from classp.study import run_study

    spec = _with_population(load_spec(args.spec), args.population)
    methods = [args.method] if args.method else None
    if args.workers != 1:
        from classp.study import run_study_workers

        run_study_workers(spec, args.workers, methods=methods, n_trials=args.n_trials,
                          storage_url=args.storage, tracking_uri=args.tracking_uri)
        return 0
    run_study(spec, methods=methods, n_trials=args.n_trials,
              storage_url=args.storage, tracking_uri=args.tracking_uri,
              progress=not args.no_progress and sys.stderr.isatty())
    return 0


def study_confirm_command(args) -> int:
    choose_threads()
    from classp.specs import load_spec
    from classp.study import confirm

    spec = _with_population(load_spec(args.spec), args.population)
    confirm(spec, methods=[args.method] if args.method else None, storage_url=args.storage,
            tracking_uri=args.tracking_uri)
    return 0


def dashboard_command(args) -> int:
    import time

    from classp.dashboards import build_dashboard, load_dashboard_spec

    spec = load_dashboard_spec(args.spec)
    start = time.perf_counter()
    out = build_dashboard(spec, tracking_uri=args.tracking_uri,
                          out=Path(args.out) if args.out else None)
    print(f"wrote {out} in {time.perf_counter() - start:.1f} s (also logged to MLflow, "
          f"experiment classp-dashboards)")
    return 0


def reproduce_command(args) -> int:
    choose_threads()
    from classp.reproduce import load_reproduce_spec, reproduce, table_from_logs
    from classp.scenario_tables import is_scenario_table

    top = read_spec(args.spec, "reproduce spec", "studies/paper-table1.toml")
    if is_scenario_table(top):  # a field's table: rows x scenarios
        return _reproduce_scenario_table(args, top)
    if args.scenarios:
        raise UserError(f"--scenarios is for the field's tables (rows x scenarios, such as "
                        f"studies/hsu2018-split-mnist.toml); {args.spec} has no scenarios")
    spec = load_reproduce_spec(args.spec)
    if args.from_logs:
        table_from_logs(spec, [Path(p) for p in args.from_logs])
        return 0
    reproduce(spec, seeds=args.seeds, subsample=args.subsample,
              data_dir=Path(args.data_dir) if args.data_dir else None, download=args.download,
              tracking_uri=args.tracking_uri, device=args.device, rows=args.rows, rules=args.rules,
              population=1 if args.population is None else args.population)
    return 0


def _reproduce_scenario_table(args, top) -> int:
    from classp.reproduce import select_rows
    from classp.scenario_tables import (
        load_scenario_table_spec,
        reproduce_scenarios,
        scenario_table_from_logs,
    )

    spec = load_scenario_table_spec(top)
    if args.rules:
        raise UserError("--rules is for the CLASSP paper's tables, whose CLASSP rows run under "
                        "both rules; this table has no such rows")
    if args.from_logs:
        scenario_table_from_logs(spec, [Path(p) for p in args.from_logs])
        return 0
    reproduce_scenarios(spec, seeds=args.seeds, subsample=args.subsample,
                        data_dir=Path(args.data_dir) if args.data_dir else None,
                        download=args.download, tracking_uri=args.tracking_uri,
                        device=args.device, rows=select_rows(spec, args.rows),
                        scenarios=args.scenarios, population=1 if args.population is None else args.population)
    return 0


def data_command(args) -> int:
    from classp.data import default_data_dir
    from classp.data.install import install

    root = Path(args.data_dir) if args.data_dir else default_data_dir()
    raw = install(args.dataset, Path(args.source), root)
    print(f"{args.dataset}: 4 files checked and copied to {raw}")
    return 0


def ui_command(args) -> int:
    from classp.paths import ensure_home, home
    from classp.tracking import default_tracking_uri
    from classp.ui import serve

    if not 1 <= args.port <= 65535:
        raise UserError(f"--port must be between 1 and 65535, got {args.port}")
    ensure_home()
    uri = args.tracking_uri or default_tracking_uri()
    return serve(uri, (home() / "artifacts").as_uri(), args.host, args.port)
