"""The GPU throughput benchmark runs end to end on a CPU at small scale (its numbers there
say nothing about a GPU; that it runs, and prints every table, is what is checked)."""

from __future__ import annotations

import re
import subprocess
import sys

from support import REPO, subprocess_env


def test_the_benchmark_prints_steps_trials_and_workers_tables(vision_data_dir):
    done = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "gpu_throughput.py"), "--device", "cpu",
         "--data-dir", str(vision_data_dir), "--workers", "1,2", "--trials-per-worker", "1",
         "--populations", "1,2",
         "--bare-steps", "20"],
        capture_output=True, text=True, timeout=900, env=subprocess_env())
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "mnist-fmnist, paper protocol, full data (35 steps per trial)" in out
    for row in ("bare step (forward, backward, SGD), eager", "engine step, eager",
                "engine step, graphed", "published pipeline step (DataLoader)"):
        assert re.search(rf"\| {re.escape(row)} \| \d+\.\d{{3}} \|", out), row
    assert re.search(r"\| graphed \(\d+ steps replayed, \d+ eager\) \| \d+\.\d \|", out)
    # one row per worker count and population: trials, wall seconds, trials per hour, steady
    # rate; a worker trains at least one whole population
    for workers, population, trials in ((1, 1, 1), (2, 1, 2), (1, 2, 2), (2, 2, 4)):
        assert re.search(rf"^\| {workers} \| {population} \| {trials} \| \d+ \| \d+ \| \d+ \| - \|$",
                         out, re.M), out
