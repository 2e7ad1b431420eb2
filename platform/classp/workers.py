"""`classp study run --workers N`: N worker processes on one machine share one study.

Each worker is the ordinary single-process `classp study run` (same Optuna storage, same
MLflow store), so a trial's Optuna record and MLflow run are exactly what one process
writes; the storage's lock makes the workers ask for exactly the requested number of
trials between them. Workers are pinned round-robin to the visible GPUs
(`CUDA_VISIBLE_DEVICES`), and on a CPU each gets its share of the free cores (classp.threads).

Several processes on one GPU time-slice it; under CUDA MPS they run concurrently (see
docs/gpu.md), which is where most of the throughput of many workers comes from.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

from classp import threads


def worker_command(spec_path: Path, method: str | None, n_trials: int | None, storage_url: str,
                   tracking_uri: str, population: int = 1) -> list[str]:
    command = [sys.executable, "-m", "classp.cli", "study", "run", str(spec_path),
               "--storage", storage_url, "--tracking-uri", tracking_uri, "--no-progress",
               "--population", str(population)]
    if method:
        command += ["--method", method]
    if n_trials is not None:
        command += ["--n-trials", str(n_trials)]
    return command


def worker_environments(n_workers: int, base: dict[str, str] | None = None) -> list[dict[str, str]]:
    """One environment per worker: GPU i % (number of GPUs), or its share of the CPU cores."""
    base = dict(os.environ if base is None else base)
    gpus = _visible_gpus(base)
    # N processes with every core each would fight over them: each gets its share of the
    # cores that are free now (classp.threads), unless the user set OMP_NUM_THREADS.
    share = threads.choose(workers=n_workers, env=base).environment()
    envs = []
    for i in range(n_workers):
        env = dict(base, CLASSP_WORKER=str(i), PYTHONUNBUFFERED="1", **share)
        if gpus:
            env["CUDA_VISIBLE_DEVICES"] = gpus[i % len(gpus)]
        envs.append(env)
    return envs


def _visible_gpus(env: dict[str, str]) -> list[str]:
    listed = env.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [g.strip() for g in listed.split(",") if g.strip() and g.strip() != "-1"]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []


def run_workers(spec_path: Path, n_workers: int, method: str | None, n_trials: int | None,
                storage_url: str, tracking_uri: str, echo=print, population: int = 1) -> list[int]:
    """Start the workers, echo their output line by line with a `[worker i]` prefix, wait
    for all of them; return their exit codes. Ctrl-C stops every worker (each queues its
    running trial again, as a single process does)."""
    command = worker_command(spec_path, method, n_trials, storage_url, tracking_uri, population)
    processes = [subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  text=True, start_new_session=True)
                 for env in worker_environments(n_workers)]
    lock = threading.Lock()

    def relay(i: int, process: subprocess.Popen) -> None:
        for line in process.stdout:
            with lock:
                echo(f"[worker {i}] {line.rstrip()}")

    readers = [threading.Thread(target=relay, args=(i, p), daemon=True) for i, p in enumerate(processes)]
    for r in readers:
        r.start()
    try:
        codes = [p.wait() for p in processes]
    except KeyboardInterrupt:
        for p in processes:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGINT)
        for p in processes:
            p.wait()
        raise
    finally:
        for r in readers:
            r.join(timeout=5)
    return codes
