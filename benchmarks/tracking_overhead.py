"""Tracking overhead: the same trial with full MLflow tracking and with tracking off.

Full tracking is what a study does for every trial: a child run, every config value as a
param, loss, accuracy and sparsity over steps through batched logging, the accuracy
matrix, per-task update-count histograms (JSON) and their PNG figure, against the local
SQLite store. Both variants run in the same
process, alternated, same seed; the minimum of the repeats is compared. Measured, not
asserted (target, issue 4: at most 3% extra wall time).

    python benchmarks/tracking_overhead.py [--repeats 3] [--subsample 0.1]

Trials: the paper's vision protocol (mnist-fmnist, subsampled; the real MNIST must be in
the data folder, see trial_time.py) and, for scale, one quick-start trial on split-digits.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from classp.data import DataOptions, load_sequence
from classp.engine import RunConfig, run
from classp.tracking import RunLogger, Tracking
from trial_time import METHOD, stage_data


def timed_trial(config: RunConfig, sequence, tracking: Tracking | None, experiment_id, parent_id) -> float:
    start = time.perf_counter()
    if tracking is None:
        run(config, sequence=sequence)
    else:
        run_id = tracking.child_run(experiment_id, parent_id, "overhead", {})
        logger = RunLogger(tracking.client, run_id, extra_params={"study": "benchmark"})
        run(config, [logger], sequence=sequence)
        tracking.finish(run_id, "finished")
    return time.perf_counter() - start


def measure(label: str, config: RunConfig, sequence, tracking: Tracking, repeats: int) -> None:
    experiment_id = tracking.experiment("benchmark-" + config.sequence)
    parent_id = tracking.parent_run(experiment_id, "overhead", {})
    off, on = [], []
    tracked = RunConfig(**{**config.__dict__, "track_updates": True})
    timed_trial(config, sequence, None, None, None)  # warm-up: first-call costs
    for _ in range(repeats):
        off.append(timed_trial(config, sequence, None, None, None))
        on.append(timed_trial(tracked, sequence, tracking, experiment_id, parent_id))
    a, b = min(off), min(on)
    print(f"{label:<46}{a:>10.3f}{b:>10.3f}{b - a:>+10.3f}{(b - a) / a * 100:>+11.1f}%")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--subsample", type=float, default=0.1)
    parser.add_argument("--data-dir", type=Path, default=None)
    args = parser.parse_args()
    os.environ["CLASSP_HOME"] = tempfile.mkdtemp(prefix="classp-overhead-")
    tracking = Tracking()
    tracking.check()

    root, note = stage_data(args.data_dir)
    vision = load_sequence("mnist-fmnist", DataOptions(data_dir=root, subsample=args.subsample))
    digits = load_sequence("split-digits")
    print(f"{'trial':<46}{'off (s)':>10}{'on (s)':>10}{'extra (s)':>10}{'overhead':>12}")
    measure(f"mnist-fmnist x{args.subsample:g}, classp (paper)", RunConfig(
        sequence="mnist-fmnist", method="classp", method_params=METHOD), vision, tracking,
        args.repeats)
    measure("split-digits, classp, 3 epochs (quick start)", RunConfig(
        sequence="split-digits", method="classp", method_params={"lr": 0.05}, epochs=3),
        digits, tracking, args.repeats)
    if note:
        print(f"({note})")


if __name__ == "__main__":
    main()
