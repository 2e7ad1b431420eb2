"""The field's published tables that `classp reproduce` reruns beside the CLASSP paper's
(classp.paper): each a source, its number of runs, and per row the mean ± std of ACC per
scenario, as published.

ACC is the mean test accuracy (%) over all tasks after the last one. Hsu et al. report
numpy's std (over the runs, n in the denominator); `sample_std` turns it into the sample
standard deviation (n - 1) that ours is, for comparing the two means.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ReferenceTable:
    source: str
    runs: int
    sequence: str
    protocol: str
    rows: dict[str, dict[str, tuple[float, float]]]  # row -> scenario -> (mean %, std %)
    std_ddof: int = 0  # the published std's denominator: n - std_ddof

    def sample_std(self, std: float) -> float:
        """A published std as a sample standard deviation (n - 1 in the denominator)."""
        return std * (self.runs - self.std_ddof) ** 0.5 / (self.runs - 1) ** 0.5


HSU2018_SPLIT_MNIST = ReferenceTable(
    source="Hsu, Liu, Ramasamy and Kira 2018, 'Re-evaluating continual learning scenarios: a "
           "categorization and case for strong baselines' (GT-RIPL/Continual-Learning-Benchmark, "
           "fig/results_split_mnist.png)",
    runs=10, sequence="split-mnist", protocol="hsu2018",
    rows={
        "adam": {"task": (93.46, 2.01), "domain": (55.16, 1.38), "class": (19.71, 0.08)},
        "sgd": {"task": (97.98, 0.09), "domain": (63.20, 0.35), "class": (19.46, 0.04)},
        "adagrad": {"task": (98.06, 0.53), "domain": (58.08, 1.06), "class": (19.82, 0.09)},
        "l2": {"task": (98.18, 0.96), "domain": (66.00, 3.73), "class": (22.52, 1.08)},
        "ewc": {"task": (97.70, 0.81), "domain": (58.85, 2.59), "class": (19.80, 0.05)},
        "online-ewc": {"task": (98.04, 1.10), "domain": (57.33, 1.44), "class": (19.77, 0.04)},
        "si": {"task": (98.56, 0.49), "domain": (64.76, 3.09), "class": (19.67, 0.09)},
        "offline": {"task": (99.52, 0.16), "domain": (98.59, 0.15), "class": (97.53, 0.30)},
    },
)

REFERENCE_TABLES: dict[str, ReferenceTable] = {"hsu2018-split-mnist": HSU2018_SPLIT_MNIST}
