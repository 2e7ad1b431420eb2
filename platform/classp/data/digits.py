"""scikit-learn's bundled 8x8 digits: real data that needs no download, for quick runs."""

from __future__ import annotations

import torch

from classp.data.base import Split, Task


def load_digits_task(val_fraction: float = 0.2, test_fraction: float = 0.2) -> Task:
    """All 1,797 digits as one task, split train/val/test with a fixed permutation."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.tensor(bunch.images, dtype=torch.float32) / 16.0
    x = ((x - x.mean()) / x.std()).unsqueeze(1)  # (N, 1, 8, 8)
    y = torch.tensor(bunch.target, dtype=torch.long)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    n_test = int(len(y) * test_fraction)
    n_val = int(len(y) * val_fraction)
    test, val, train = order[:n_test], order[n_test:n_test + n_val], order[n_test + n_val:]
    return Task("digits", Split(x[train], y[train]), Split(x[val], y[val]), Split(x[test], y[test]))
