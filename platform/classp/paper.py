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

from dataclasses import dataclass

PAPER_RUNS = 10  # every row of both tables is over 10 runs
PUBLISHED_SPLIT = "train"  # the paper evaluates on the training sets


@dataclass(frozen=True)
class PublishedRow:
    label: str  # as the paper names the row
    settings: str  # as the paper states them (and what the scripts add)
    accuracy: dict[str, tuple[float, float]]  # task -> (mean %, std %)


TABLES: dict[str, dict[str, PublishedRow]] = {
    "table1": {
        "classp": PublishedRow("CLASSP", "lr 0.2, threshold 0.5, no decay on the first dataset, p 1",
                               {"mnist": (91.05, 1.94), "fmnist": (85.53, 0.83)}),
        "classp-no-threshold": PublishedRow(
            "CLASSP without threshold", "lr 0.2, threshold 0, no decay on the first dataset, p 1",
            {"mnist": (80.56, 1.55), "fmnist": (85.76, 2.19)}),
        "classp-adagrad": PublishedRow(
            "CLASSP (AdaGrad instance)", "lr 0.2, threshold 0, decay on the first dataset too, p 2",
            {"mnist": (66.10, 3.09), "fmnist": (81.69, 0.91)}),
        "sgd": PublishedRow("Vanilla SGD", "lr not stated; the script's 0.2",
                            {"mnist": (43.18, 0.90), "fmnist": (85.16, 0.64)}),
        "ewc": PublishedRow("EWC", "not stated; the script: lr 0.25, lambda 5000, separate anchor model",
                            {"mnist": (68.52, 5.32), "fmnist": (82.48, 1.19)}),
    },
    "table2": {
        "classp": PublishedRow("CLASSP", "lr 0.025, threshold 0.99, p 1",
                               {"fpb": (66.04, 3.85), "imdb": (85.74, 1.30)}),
        "classp-no-threshold": PublishedRow("CLASSP without threshold", "lr 0.025, threshold 0, p 1",
                                            {"fpb": (64.81, 6.63), "imdb": (85.48, 1.38)}),
        "classp-adagrad": PublishedRow("CLASSP (AdaGrad instance)", "lr 0.025, threshold 0, p 2",
                                       {"fpb": (52.95, 1.97), "imdb": (85.01, 2.53)}),
        "sgd": PublishedRow("Vanilla SGD", "the script: lr 0.025",
                            {"fpb": (47.24, 5.57), "imdb": (85.67, 1.72)}),
        "adam": PublishedRow("Adam", "the script: lr 0.0003",
                             {"fpb": (46.63, 3.72), "imdb": (85.66, 1.99)}),
        "ewc": PublishedRow("EWC", "the script: SGD, lambda 5000, anchored at the end of FPB",
                            {"fpb": (52.46, 1.49), "imdb": (85.67, 1.15)}),
    },
}

SEQUENCE_TABLE = {"mnist-fmnist": "table1", "fpb-imdb": "table2"}
# The paper's headline: which row stands for which method on the dashboards.
HEADLINE_ROWS = {"classp": "classp", "ewc": "ewc", "sgd": "sgd", "adam": "adam"}


def published(sequence: str, method: str) -> dict[str, tuple[float, float]]:
    """task -> (mean %, std %) the paper reports for `method` on `sequence`, or {}."""
    table = TABLES.get(SEQUENCE_TABLE.get(sequence, ""), {})
    row = table.get(HEADLINE_ROWS.get(method, ""))
    return dict(row.accuracy) if row else {}
