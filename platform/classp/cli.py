"""The `classp` command.

Bad input ends in one line on stderr (`classp: error: ...`) and exit status 2, never a
traceback: every check raises `UserError`, and argparse's own errors are reshaped.
"""

from __future__ import annotations

import sys

try:  # a Ctrl-C while the command imports (before main installs its handler): one line too
    import argparse

    from classp import commands, interrupts, paths, streams
    from classp.errors import DiskFull, UserError, is_disk_full
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


def _add_population_argument(parser, what: str) -> None:
    parser.add_argument("--population", type=int, default=None, metavar="K",
                        help=f"train K {what} at a time as one batched model (default: the "
                             f"spec's population, else 1); the MLPs and the paper's CNN for now")


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
    p_run.set_defaults(func=commands.run_command)
    p_list = sub.add_parser("list", help="name the sequences, methods and models")
    p_list.set_defaults(func=commands.list_command)

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
    p_srun.set_defaults(func=commands.study_run_command)
    p_confirm = study_sub.add_parser(
        "confirm", help="re-run the best parameters on fresh seeds, on the test split")
    _add_study_arguments(p_confirm)
    _add_population_argument(p_confirm, "confirmation seeds")
    p_confirm.set_defaults(func=commands.study_confirm_command)

    p_dash = sub.add_parser("dashboard", help="build a Plotly dashboard from the tracked runs")
    p_dash.add_argument("spec", help="dashboard spec, e.g. dashboards/classp-vs-ewc.toml")
    p_dash.add_argument("--tracking-uri", default=None,
                        help=TRACKING_HELP)
    p_dash.add_argument("--out", default=None, help="HTML file to write (default: <name>.html)")
    p_dash.set_defaults(func=commands.dashboard_command)

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
                            "the MLPs and the paper's CNN for now")
    p_rep.add_argument("--device", default="auto",
                       help="auto (default: a GPU if there is one), cpu, cuda or cuda:N")
    p_rep.add_argument("--from-logs", nargs="+", default=None, metavar="FILE",
                       help="run nothing: rebuild the table and the paired comparisons from "
                            "what earlier runs printed (rows run in parallel processes)")
    p_rep.set_defaults(func=commands.reproduce_command)

    p_data = sub.add_parser("data", help="check and copy MNIST or Fashion-MNIST idx files "
                                         "into the data folder")
    p_data.add_argument("dataset", choices=("mnist", "fashion-mnist"), help="which data set")
    p_data.add_argument("source", help="folder with the four idx files (.gz or not)")
    p_data.add_argument("--data-dir", default=None,
                        help="data folder to fill (default: $CLASSP_DATA or ~/.cache/classp/data)")
    p_data.set_defaults(func=commands.data_command)

    p_ui = sub.add_parser("ui", help="open the MLflow UI on the local store")
    p_ui.add_argument("--tracking-uri", default=None,
                      help="the store to browse (default sqlite:///.classp/mlflow.db)")
    p_ui.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p_ui.add_argument("--port", type=int, default=5000, help="port to listen on (default 5000)")
    p_ui.set_defaults(func=commands.ui_command)
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
                commands.choose_threads()  # before the method flags import torch and its OpenMP
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
