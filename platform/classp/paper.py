"""Every number the paper publishes in its two tables, to put ours beside them.

Ludwig 2024, "CLASSP: a Biologically-Inspired Approach to Continual Learning through
Adjustment Suppression and Sparsity Promotion" (arXiv 2405.09637). Both tables give the
mean and standard deviation over 10 runs of the accuracy (%) on each task after the whole
sequence, measured on the training sets with the model in training mode (the published
scripts never call eval()).

Table 1: MNIST (4 epochs) then Fashion-MNIST (1 epoch). Table 2: Financial PhraseBank then
IMDB. Rows are keyed by a short name that reproduce specs refer to (`paper_row`).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from importlib import resources

PAPER_RUNS = 10  # every row of both tables is over 10 runs
PUBLISHED_SPLIT = "train"  # the paper evaluates on the training sets


@dataclass(frozen=True)
class PublishedRow:
    label: str  # as the paper names the row
    settings: str  # as the paper states them (and what the scripts add)
    accuracy: dict[str, tuple[float, float]]  # task -> (mean %, std %)


def _read_tables() -> dict[str, dict[str, PublishedRow]]:
    # The numbers are data, kept beside this module in a TOML file (in table order: a
    # table's rows keep the order the paper prints them in).
    text = resources.files("classp").joinpath("paper_tables.toml").read_text(encoding="utf-8")
    return {table: {key: PublishedRow(row["label"], row["settings"],
                                      {task: (mean, std) for task, (mean, std)
                                       in row["accuracy"].items()})
                    for key, row in rows.items()}
            for table, rows in tomllib.loads(text).items()}


TABLES: dict[str, dict[str, PublishedRow]] = _read_tables()

SEQUENCE_TABLE = {"mnist-fmnist": "table1", "fpb-imdb": "table2"}
# The paper's headline: which row stands for which method on the dashboards.
HEADLINE_ROWS = {"classp": "classp", "ewc": "ewc", "sgd": "sgd", "adam": "adam"}


def published(sequence: str, method: str) -> dict[str, tuple[float, float]]:
    """task -> (mean %, std %) the paper reports for `method` on `sequence`, or {}."""
    table = TABLES.get(SEQUENCE_TABLE.get(sequence, ""), {})
    row = table.get(HEADLINE_ROWS.get(method, ""))
    return dict(row.accuracy) if row else {}
