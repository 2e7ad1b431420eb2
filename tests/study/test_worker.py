"""The worker loop's hold on Optuna's private surface: every name it relies on is still
where it follows it (CI installs the newest Optuna 5.x, so a move shows here first)."""

from __future__ import annotations

import importlib

import optuna

from classp.study.worker import OPTUNA_PRIVATE


def test_every_private_optuna_name_the_worker_loop_uses_is_there():
    study = optuna.create_study()  # in memory
    trial = study.ask()
    instances = {"optuna.study.Study": study, "optuna.trial.Trial": trial}
    for dotted in OPTUNA_PRIVATE:
        owner, _, name = dotted.rpartition(".")
        if owner in instances:
            assert hasattr(instances[owner], name), f"{dotted} is gone in Optuna {optuna.__version__}"
        else:
            module = importlib.import_module(owner)
            assert callable(getattr(module, name, None)), f"{dotted} is gone in Optuna {optuna.__version__}"


def test_the_private_names_listed_are_the_ones_the_loop_reads():
    """The list is not decoration: each name appears in the loop's source."""
    import inspect

    from classp.study import worker

    source = inspect.getsource(worker)
    for dotted in OPTUNA_PRIVATE:
        assert f".{dotted.rpartition('.')[2]}" in source or f" {dotted.rpartition('.')[2]}" in source
