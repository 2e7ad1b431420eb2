"""The `classp` command as a user meets it: output, exit status, one-line errors."""

from __future__ import annotations

import pytest

from support import TINY_STUDY, run_classp


def classp(*args, env=None):
    """Run the real console entry point in a fresh interpreter."""
    return run_classp(*args, env=env, timeout=300)


def test_run_prints_the_accuracy_matrix_and_metrics():
    out = classp("run", "--sequence", "split-digits", "--method", "classp", "--epochs", "1")
    assert out.returncode == 0, out.stderr
    assert "accuracy on the test split" in out.stdout
    assert "digits-89" in out.stdout and "acc=" in out.stdout and "bwt=" in out.stdout


def test_list_names_sequences_methods_and_models():
    out = classp("list")
    assert out.returncode == 0
    for name in ("split-digits", "mnist-fmnist", "fpb-imdb", "classp", "ewc", "si", "joint",
                 "l2", "mas", "paper-cnn", "paper-transformer", "mlp-400", "mlp-1000"):
        assert name in out.stdout
    assert "scenarios: task, domain, class (split sequences" in out.stdout
    assert "protocols: study, paper, hsu2018, vandeven2022" in out.stdout


@pytest.mark.parametrize("args, message", [
    (["run", "--sequence", "mnist"], "unknown sequence 'mnist'; choose one of: mnist-fmnist, fpb-imdb"),
    (["run", "--method", "lwf"], "unknown method 'lwf'; choose one of: classp, ewc, sgd"),
    (["run", "--model", "vit"], "unknown model 'vit'; choose one of: paper-cnn, paper-transformer, paper-cnn-published, paper-transformer-published, mlp, mlp-400, mlp-1000"),
    (["run", "--epochs", "0"], "epochs must be positive integers"),
    (["run", "--epochs", "-2"], "epochs must be positive integers"),
    (["run", "--batch-size", "0"], "batch size must be a positive integer"),
    (["run", "--method", "sgd", "--threshold", "0.5"], "method 'sgd' has no parameter 'threshold'"),
    (["run", "--lr", "-1"], "lr must be a positive number, got -1.0"),
    (["run", "--lr", "fast"], "argument --lr: invalid float value: 'fast'"),
    (["run", "--subsample", "0"], "subsample must be in (0, 1]"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
    (["run", "--method", "ewc", "--param", "ewc_lambda=abc"], "method 'ewc': ewc_lambda must be a finite number, got 'abc'"),
    (["run", "--method", "si", "--param", "c=abc"], "method 'si': c must be a finite number, got 'abc'"),
    (["run", "--method", "sgd", "--param", "momentum=-1"], "momentum must be >= 0, got -1"),
    (["run", "--method", "sgd", "--lr", "inf"], "method 'sgd': lr must be a finite number, got inf"),
    (["run", "--method", "classp", "--param", "decay=maybe"], "method 'classp': decay must be true or false, got 'maybe'"),
    (["run", "--eps", "-1e-5"], "for a negative number write it with '=', e.g. --eps=-1e-5"),
    (["run", "--sequence", "split-digits", "--tasks", "3"], "'split-digits' has a fixed number of tasks; --tasks is for the permuted sequences"),
    (["run", "--sequence", "permuted-digits", "--tasks", "100000"], "100000 tasks would hold 100000 permuted copies"),
])
def test_bad_input_is_one_line_and_a_non_zero_exit(args, message):
    out = classp(*args)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in out.stderr
    assert lines[0].startswith("classp: error: ")
    assert message in lines[0]


def test_a_missing_data_directory_gives_the_expected_paths(tmp_path):
    out = classp("run", "--sequence", "split-mnist", "--data-dir", str(tmp_path / "none"))
    assert out.returncode == 2
    line, = out.stderr.strip().splitlines()
    assert f"{tmp_path / 'none' / 'MNIST' / 'raw'}/" in line and "--download" in line


def _all_parsers(parser):
    import argparse

    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _all_parsers(sub)


def test_every_flag_of_every_command_says_what_it_does():
    import argparse

    from classp.cli import build_parser

    silent = [f"{p.prog} {'/'.join(a.option_strings) or a.dest}"
              for p in _all_parsers(build_parser(method_flags=True)) for a in p._actions
              if not isinstance(a, (argparse._HelpAction, argparse._SubParsersAction))
              and (not a.help or a.help == argparse.SUPPRESS)]
    assert silent == []


def test_top_level_help_shows_three_examples():
    out = classp("--help")
    assert out.returncode == 0
    examples = out.stdout.split("examples:")[1].strip().splitlines()
    assert len(examples) == 3 and all(e.strip().startswith("classp ") for e in examples)


def test_the_run_flags_offer_exactly_the_protocols_and_scenarios_the_engine_knows():
    # the parser spells its choices out (building it must not import torch); they must not drift
    from classp.cli import build_parser
    from classp.data import PROTOCOLS
    from classp.scenarios import SCENARIOS

    run_parser = build_parser()._subparsers._group_actions[0].choices["run"]
    choices = {a.dest: tuple(a.choices) for a in run_parser._actions if a.choices}
    assert choices["protocol"] == PROTOCOLS and choices["scenario"] == SCENARIOS


def test_storage_and_tracking_uri_come_from_the_environment_when_no_flag_names_them(tmp_path):
    """How the compose stack's workers find PostgreSQL and MLflow: nobody types a URL."""
    home, journal, store = tmp_path / "home", tmp_path / "shared.journal", tmp_path / "shared.db"
    env = {"CLASSP_HOME": str(home), "CLASSP_STORAGE": str(journal),
           "CLASSP_TRACKING_URI": f"sqlite:///{store}"}
    done = run_classp("study", "run", TINY_STUDY, "--method", "sgd", "--n-trials", 1, env=env)
    assert done.returncode == 0, done.stderr
    assert journal.stat().st_size > 0 and store.stat().st_size > 0
    assert not (home / "optuna.journal").exists() and not (home / "mlflow.db").exists()
    flagged = tmp_path / "flag.journal"  # a flag still wins over the environment
    done = run_classp("study", "run", TINY_STUDY, "--method", "sgd", "--n-trials", 1,
                      "--storage", flagged, env=env)
    assert done.returncode == 0, done.stderr
    assert flagged.stat().st_size > 0


@pytest.mark.parametrize("variable, value, message", [
    ("CLASSP_STORAGE", "ftp://host/optuna",
     "unsupported storage URL ftp://host/optuna (from $CLASSP_STORAGE); use a journal file path"),
    ("CLASSP_TRACKING_URI", "foo://bar",
     "unsupported tracking URI foo://bar (from $CLASSP_TRACKING_URI); use one of sqlite://"),
])
def test_a_bad_value_in_the_environment_is_named_as_coming_from_it(tmp_path, variable, value, message):
    """The user may not know the variable is set (a compose file, a shell profile): the one
    line names it, and what the earlier study recorded is byte for byte unchanged."""
    home = tmp_path / "home"
    done = run_classp("study", "run", TINY_STUDY, "--method", "sgd", "--n-trials", 1,
                      env={"CLASSP_HOME": str(home)})
    assert done.returncode == 0, done.stderr
    before = {p: p.read_bytes() for p in home.rglob("*") if p.is_file()}
    done = run_classp("study", "run", TINY_STUDY, "--method", "sgd", "--n-trials", 2,
                      env={"CLASSP_HOME": str(home), variable: value})
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    line, = done.stderr.strip().splitlines()
    assert line.startswith("classp: error: " + message), line
    assert {p: p.read_bytes() for p in home.rglob("*") if p.is_file()} == before
