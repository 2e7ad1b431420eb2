"""Optuna studies: one per (study spec, method), created or resumed, any number of workers.

The package in the order a study runs: `storage` (where a study lives, and the locks that
let workers share it), `space` (a method's search space as Optuna sees it), `objective`
(one trial through the engine, tracked as one MLflow run), `worker` (the ask-run-tell
loop), `summary` (what a study says at its end), `run` (`classp study run`) and
`confirm` (`classp study confirm`).
"""

from classp.study.confirm import confirm
from classp.study.run import open_study, run_study, run_study_workers
from classp.study.storage import open_storage, repair_journal_tail
from classp.study.summary import best_params

__all__ = ["best_params", "confirm", "open_storage", "open_study", "repair_journal_tail",
           "run_study", "run_study_workers"]
