"""The `classp` command.

Bad input ends in one line on stderr (`classp: error: ...`) and exit status 2, never a
traceback: every check raises `UserError`, and argparse's own errors are reshaped.
"""

from __future__ import annotations

import sys

try:  # a Ctrl-C while the command imports (before main installs its handler): one line too
    import argparse
    import json
    from pathlib import Path
    from typing import Any

    from classp import interrupts, paths, streams
    from classp.errors import DiskFull, UserError, is_disk_full
    from classp.tomlfile import read_spec
except KeyboardInterrupt:
    print("classp: interrupted", file=sys.stderr)
    raise SystemExit(130) from None

EXIT_USAGE = 2
EXAMPLES = """examples:
  classp run --sequence split-digits --method classp --lr 0.2 --threshold 1e-4
  classp study run studies/permuted-digits.toml && classp study confirm studies/permuted-digits.toml
  classp reproduce studies/paper-table1.toml --seeds 10 --rows 1,4,5
"""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse would print the usage too: keep one line
        if message.endswith("expected one argument"):
            # "--eps -1e-5": argparse takes a negative number in exponent form for a flag
            message += "; for a negative number write it with '=', e.g. --eps=-1e-5"
        raise UserError(f"{message} (see '{self.prog} --help')")


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


def _add_method_flags(p: argparse.ArgumentParser) -> None:
    """A flag per method parameter, derived from the methods' declarations
    (classp.methods.params): `--ewc-lambda`, `--decay/--no-decay`. Unset, a method keeps
    its default. Importing the methods imports torch, so only `classp run` builds them."""
    from classp.methods import METHODS
    from classp.methods.params import command_line_flags

    for flag in command_line_flags(METHODS):
        option = f"--{flag.name.replace('_', '-')}"
        if flag.kind is bool:
            p.add_argument(option, dest=f"method.{flag.name}", action=argparse.BooleanOptionalAction,
                           default=None, help=flag.help)
        else:
            p.add_argument(option, dest=f"method.{flag.name}", type=flag.kind, default=None,
                           metavar=flag.name.upper(), help=flag.help)


def _add_run_arguments(p: argparse.ArgumentParser, method_flags: bool) -> None:
    p.add_argument("--sequence", default="split-digits", help="task sequence (see `classp list`)")
    p.add_argument("--method", default="classp", help="method (see `classp list`)")
    p.add_argument("--model", default=None, help="model (default: the sequence's own)")
    if method_flags:
        _add_method_flags(p)
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                   help="any method parameter (each also has a flag: see `classp run --help`)")
    p.add_argument("--epochs", type=int, nargs="+", default=None,
                   help="epochs, one for all tasks or one per task (>= 1; default: the protocol's)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="training batch size (>= 1; default: the protocol's)")
    p.add_argument("--shuffle", action=argparse.BooleanOptionalAction, default=None,
                   help="shuffle each epoch (default: the protocol's; the paper's does not)")
    p.add_argument("--seed", type=int, default=0, help="seed of initialisation and shuffling (default 0)")
    p.add_argument("--device", default="auto", help="auto (default: a GPU if there is one), cpu, cuda or cuda:N")
    p.add_argument("--data-dir", default=None, help="data folder (default: $CLASSP_DATA)")
    p.add_argument("--download", action="store_true", help="download missing data")
    p.add_argument("--subsample", type=float, default=1.0,
                   help="keep this fraction of each split, in (0, 1] (default 1)")
    p.add_argument("--tasks", dest="num_tasks", type=int, default=None,
                   help="number of tasks of a permuted sequence (>= 1; default: the sequence's)")
    p.add_argument("--eval-train", action=argparse.BooleanOptionalAction, default=None,
                   help="also evaluate on the training sets (the paper's protocol does)")
    p.add_argument("--protocol", default="study",
                   choices=("study", "paper", "hsu2018", "vandeven2022"),
                   help="study (default): validation carved out, eval-mode evaluation; paper "
                        "(mnist-fmnist, fpb-imdb): what the published scripts did; hsu2018 "
                        "(split-mnist), vandeven2022 (split-mnist, permuted-mnist): the "
                        "field's reference protocols (docs/protocols.md)")
    p.add_argument("--scenario", default=None, choices=("task", "domain", "class"),
                   help="split sequences: task- (a head per task), domain- (one shared head) "
                        "or class-incremental (default: class; permuted sequences are "
                        "domain-incremental by construction)")
    p.add_argument("--loss-targets", type=float, nargs="+", default=None, metavar="LOSS",
                   help="train each task in passes until the last batch's loss is below this "
                        "(one, or one per task); --epochs then caps the passes")
    p.add_argument("--imdb-labels", default="corrected", choices=("corrected", "published"),
                   help="fpb-imdb: IMDB pos -> FPB positive (corrected, default) or -> neutral "
                        "(published)")
    p.add_argument("--step-mode", default="auto", choices=("auto", "eager", "graphed"),
                   help="auto: training steps replayed from CUDA graphs on a GPU, eager on a CPU")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (default: one on a terminal)")


def _method_params(args) -> dict[str, Any]:
    params = {key.removeprefix("method."): value for key, value in vars(args).items()
              if key.startswith("method.") and value is not None}
    for item in args.param:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"--param takes KEY=VALUE, got {item!r}")
        params[key.replace("-", "_")] = _parse_value(value)
    return params


def _choose_threads() -> None:
    """A training command picks its threads before torch loads OpenMP (classp.threads)."""
    from classp import threads

    threads.apply(threads.choose())


def _cmd_run(args) -> int:  # threads chosen in main, before the method flags import torch
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


def _cmd_list(args) -> int:
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


def _add_population_argument(parser, what: str) -> None:
    parser.add_argument("--population", type=int, default=None, metavar="K",
                        help=f"train K {what} at a time as one batched model (default: the "
                             f"spec's population, else 1); MLPs only for now")


def _with_population(spec, population: int | None):
    """The spec, with --population in place of its own when given."""
    import dataclasses

    if population is None:
        return spec
    if population < 1:
        raise UserError(f"--population must be at least 1 (1: one trial at a time), got {population}")
    return dataclasses.replace(spec, population=population)


def _cmd_study_run(args) -> int:
    if args.workers == 1:  # with --workers, each worker gets its share (classp.workers)
        _choose_threads()
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


def _cmd_study_confirm(args) -> int:
    _choose_threads()
    from classp.specs import load_spec
    from classp.study import confirm

    spec = _with_population(load_spec(args.spec), args.population)
    confirm(spec, methods=[args.method] if args.method else None, storage_url=args.storage,
            tracking_uri=args.tracking_uri)
    return 0


def _cmd_dashboard(args) -> int:
    import time

    from classp.dashboards import build_dashboard, load_dashboard_spec

    spec = load_dashboard_spec(args.spec)
    start = time.perf_counter()
    out = build_dashboard(spec, tracking_uri=args.tracking_uri,
                          out=Path(args.out) if args.out else None)
    print(f"wrote {out} in {time.perf_counter() - start:.1f} s (also logged to MLflow, "
          f"experiment classp-dashboards)")
    return 0


def _cmd_reproduce(args) -> int:
    _choose_threads()
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


def _cmd_data(args) -> int:
    from classp.data import default_data_dir
    from classp.data.install import install

    root = Path(args.data_dir) if args.data_dir else default_data_dir()
    raw = install(args.dataset, Path(args.source), root)
    print(f"{args.dataset}: 4 files checked and copied to {raw}")
    return 0


def _cmd_ui(args) -> int:
    from classp.paths import ensure_home, home
    from classp.tracking import default_tracking_uri
    from classp.ui import serve

    if not 1 <= args.port <= 65535:
        raise UserError(f"--port must be between 1 and 65535, got {args.port}")
    ensure_home()
    uri = args.tracking_uri or default_tracking_uri()
    return serve(uri, (home() / "artifacts").as_uri(), args.host, args.port)


TRACKING_HELP = ("MLflow tracking URI (default: $CLASSP_TRACKING_URI, else "
                 "sqlite:///.classp/mlflow.db)")


def _add_study_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("spec", help="study spec, e.g. studies/split-digits.toml")
    p.add_argument("--method", default=None, help="only this method of the spec")
    p.add_argument("--storage", default=None,
                   help="Optuna storage: a journal file or postgresql://user:password@host/optuna "
                        "(default: $CLASSP_STORAGE, else .classp/optuna.journal)")
    p.add_argument("--tracking-uri", default=None,
                   help=TRACKING_HELP)


def build_parser(method_flags: bool = False) -> argparse.ArgumentParser:
    """The command line; `method_flags`: give `classp run` a flag per method parameter
    (imports torch, which a command must not do before it chooses its threads)."""
    parser = _Parser(prog="classp", description="Continual-learning research platform for CLASSP.",
                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EXAMPLES)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    p_run = sub.add_parser("run", help="train one method through one task sequence")
    _add_run_arguments(p_run, method_flags)
    p_run.set_defaults(func=_cmd_run)
    p_list = sub.add_parser("list", help="name the sequences, methods and models")
    p_list.set_defaults(func=_cmd_list)

    p_study = sub.add_parser("study", help="Optuna studies tracked in MLflow")
    study_sub = p_study.add_subparsers(dest="study_command", required=True, parser_class=_Parser)
    p_srun = study_sub.add_parser("run", help="run or resume a study (one per method)")
    _add_study_arguments(p_srun)
    p_srun.add_argument("--n-trials", type=int, default=None,
                        help="trials each method's study should have in all (default: the spec's)")
    p_srun.add_argument("--no-progress", action="store_true",
                        help="no progress bar (default: one on a terminal)")
    _add_population_argument(p_srun, "trials")
    p_srun.add_argument("--workers", type=int, default=1, metavar="N",
                        help="run N worker processes sharing the study, pinned round-robin to "
                             "the visible GPUs (default 1: this process)")
    p_srun.set_defaults(func=_cmd_study_run)
    p_confirm = study_sub.add_parser(
        "confirm", help="re-run the best parameters on fresh seeds, on the test split")
    _add_study_arguments(p_confirm)
    _add_population_argument(p_confirm, "confirmation seeds")
    p_confirm.set_defaults(func=_cmd_study_confirm)

    p_dash = sub.add_parser("dashboard", help="build a Plotly dashboard from the tracked runs")
    p_dash.add_argument("spec", help="dashboard spec, e.g. dashboards/classp-vs-ewc.toml")
    p_dash.add_argument("--tracking-uri", default=None,
                        help=TRACKING_HELP)
    p_dash.add_argument("--out", default=None, help="HTML file to write (default: <name>.html)")
    p_dash.set_defaults(func=_cmd_dashboard)

    p_rep = sub.add_parser("reproduce", help="rerun a published table beside its numbers (the "
                                             "paper's, or the field's reference tables)")
    p_rep.add_argument("spec", help="e.g. studies/paper-table1.toml or studies/hsu2018-split-mnist.toml")
    p_rep.add_argument("--seeds", type=int, default=None, help="seeds per row (default: the spec's)")
    p_rep.add_argument("--subsample", type=float, default=1.0,
                       help="keep this fraction of every split (said in the table's title)")
    p_rep.add_argument("--data-dir", default=None,
                       help="data folder (default: $CLASSP_DATA or ~/.cache/classp/data)")
    p_rep.add_argument("--download", action="store_true", help="download missing data")
    p_rep.add_argument("--rows", default=None, metavar="N,N,...",
                       help="only these rows (1-based, in the spec's order; default: all)")
    p_rep.add_argument("--rules", default=None, metavar="RULE,RULE",
                       help="CLASSP rows: reference-code (as published), algorithm (as "
                            "specified), or both (default)")
    p_rep.add_argument("--scenarios", default=None, metavar="S,S",
                       help="tables of scenarios: only these (task, domain, class; default: "
                            "the spec's)")
    p_rep.add_argument("--tracking-uri", default=None,
                       help=TRACKING_HELP)
    p_rep.add_argument("--population", type=int, default=None, metavar="K",
                       help="train K seeds of a row at a time as one batched model (default 1); "
                            "MLPs only for now")
    p_rep.add_argument("--device", default="auto",
                       help="auto (default: a GPU if there is one), cpu, cuda or cuda:N")
    p_rep.add_argument("--from-logs", nargs="+", default=None, metavar="FILE",
                       help="run nothing: rebuild the table and the paired comparisons from "
                            "what earlier runs printed (rows run in parallel processes)")
    p_rep.set_defaults(func=_cmd_reproduce)

    p_data = sub.add_parser("data", help="check and copy MNIST or Fashion-MNIST idx files "
                                         "into the data folder")
    p_data.add_argument("dataset", choices=("mnist", "fashion-mnist"), help="which data set")
    p_data.add_argument("source", help="folder with the four idx files (.gz or not)")
    p_data.add_argument("--data-dir", default=None,
                        help="data folder to fill (default: $CLASSP_DATA or ~/.cache/classp/data)")
    p_data.set_defaults(func=_cmd_data)

    p_ui = sub.add_parser("ui", help="open the MLflow UI on the local store")
    p_ui.add_argument("--tracking-uri", default=None,
                      help="the store to browse (default sqlite:///.classp/mlflow.db)")
    p_ui.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p_ui.add_argument("--port", type=int, default=5000, help="port to listen on (default 5000)")
    p_ui.set_defaults(func=_cmd_ui)
    return parser


MAX_ERROR_CHARS = 1000


def capped(message: str) -> str:
    """An error that echoes a huge value (a 50 MB string in a spec) keeps its head, which
    names the problem, and its tail, which names the fix; the middle is cut, and said so."""
    if len(message) <= MAX_ERROR_CHARS:
        return message
    keep = MAX_ERROR_CHARS // 2
    return f"{message[:keep]} [... {len(message) - 2 * keep:,} characters cut ...] {message[-keep:]}"


def main(argv: list[str] | None = None) -> int:
    try:
        interrupts.install()
        with streams.guarded_stdout():
            argv = sys.argv[1:] if argv is None else list(argv)
            command = next((a for a in argv if not a.startswith("-")), None)
            if command == "run":
                _choose_threads()  # before the method flags import torch and its OpenMP
            args = build_parser(method_flags=command == "run").parse_args(argv)
            return args.func(args)
    except UserError as exc:
        print(f"classp: error: {capped(str(exc))}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as exc:
        if not is_disk_full(exc):
            raise
        # A write that failed for want of space, somewhere without its own message.
        print(f"classp: error: {DiskFull(paths.home())}", file=sys.stderr)
        return EXIT_USAGE
    except streams.OutputClosed:  # `classp ... | head`: a quiet exit, as Unix tools make
        streams.silence_stdout()
        return streams.CLOSED_PIPE_STATUS
    except KeyboardInterrupt:
        print(interrupts.message(), file=sys.stderr)
        return interrupts.exit_status()


if __name__ == "__main__":
    sys.exit(main())
