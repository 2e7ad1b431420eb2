"""Numbers the paper publishes, for putting ours beside them. Only numbers stated in the
paper are here; where a value is not known to this code base it is None, never a guess.

Ludwig 2024, Table 1: accuracy (%) on MNIST kept after training on Fashion-MNIST, mean of
10 runs, evaluated on the training sets.
"""

from __future__ import annotations

# sequence -> method -> task -> (mean %, std % or None)
PUBLISHED_FINAL_ACCURACY: dict[str, dict[str, dict[str, tuple[float, float | None]]]] = {
    "mnist-fmnist": {
        "classp": {"mnist": (91.05, 1.94)},
        "ewc": {"mnist": (68.52, None)},
        "sgd": {"mnist": (43.18, None)},
    },
}

PUBLISHED_SPLIT = "train"  # the paper evaluates on the training sets


def published(sequence: str, method: str) -> dict[str, tuple[float, float | None]]:
    return PUBLISHED_FINAL_ACCURACY.get(sequence, {}).get(method, {})
