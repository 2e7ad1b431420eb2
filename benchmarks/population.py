"""What pays on this machine: threads and their wait policy, and the quick start end to end.

Sections (each measured in one run, configurations interleaved round by round, medians
reported, ratios against torch's default measured in the same run):

* ``threads``: training steps per second of one quick-start run (permuted-digits, CLASSP,
  the digits MLP, 3 epochs; a warm-up run first, in the same process) with torch's default
  (every core, OpenMP's spin-then-sleep wait), every core with a passive wait, one thread,
  and the platform's own choice (classp.threads), alone and beside one busy process (a
  Python loop keeping one core busy). Each configuration runs in a fresh interpreter,
  since OpenMP reads its wait policy once, when it loads.
* ``quickstart``: the README's quick start (``classp study run`` then ``classp study
  confirm`` of studies/permuted-digits.toml on a fresh home) in seconds, torch's default
  threads against the platform's choice, alone and beside one busy process.

    python benchmarks/population.py [--sections threads,quickstart] [--rounds 3]
                                    [--n-trials N]   # per method; default: the spec's

Measured, never asserted (the README and the issue notes hold the numbers).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
QUICK_START = REPO / "studies" / "permuted-digits.toml"
CORES = os.cpu_count() or 1

# Name -> the environment a process starts with. "classp's choice" sets nothing: the
# command (or the probe below) chooses, as a user's `classp` does.
THREAD_SETTINGS = {
    "torch's default": {"OMP_NUM_THREADS": str(CORES)},
    f"{CORES} threads, passive wait": {"OMP_NUM_THREADS": str(CORES), "OMP_WAIT_POLICY": "PASSIVE"},
    "1 thread": {"OMP_NUM_THREADS": "1"},
    "classp's choice": {},
}

STEP_PROBE = """
import os, sys
from classp import threads
threads.apply(threads.choose())
import torch
from classp.engine import RunConfig, run
config = RunConfig(sequence="permuted-digits", method="classp", epochs=3,
                   method_params={"rule": "algorithm"})
run(config)  # warm-up: first-call costs
result = run(config)
print(result.steps / result.seconds, torch.get_num_threads(), os.environ.get("OMP_WAIT_POLICY", "default"))
"""


def clean_environment(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMP_", "CLASSP_THREADS"))}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO / "platform"), env.get("PYTHONPATH")) if p)
    return {**env, **extra}


@contextmanager
def beside(busy: bool):
    """Nothing, or one real process keeping one core busy for the duration."""
    process = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
    try:
        time.sleep(0.5 if busy else 0)
        yield
    finally:
        if process is not None:
            process.kill()
            process.wait()


def step_rate(settings: dict[str, str]) -> tuple[float, str]:
    done = subprocess.run([sys.executable, "-c", STEP_PROBE], capture_output=True, text=True,
                          env=clean_environment(**settings), check=True)
    rate, threads, policy = done.stdout.split()
    return float(rate), f"{threads} thread{'s' if threads != '1' else ''}, {policy}"


def quick_start_seconds(settings: dict[str, str], n_trials: int | None) -> float:
    with tempfile.TemporaryDirectory() as home:
        env = clean_environment(CLASSP_HOME=home, **settings)
        command = [sys.executable, "-m", "classp.cli", "study"]
        extra = ["--n-trials", str(n_trials)] if n_trials else []
        start = time.perf_counter()
        subprocess.run(command + ["run", str(QUICK_START), "--no-progress", *extra], env=env,
                       check=True, capture_output=True)
        subprocess.run(command + ["confirm", str(QUICK_START)], env=env, check=True,
                       capture_output=True)
        return time.perf_counter() - start


def threads_section(rounds: int) -> None:
    print(f"\n## threads: training steps per second of one quick-start run (CLASSP, permuted-digits), "
          f"median of {rounds} rounds")
    print(f"{'beside':<20}{'setting':<28}{'ran with':<26}{'steps/s':>9}{'speed-up':>12}")
    for busy in (False, True):
        rates: dict[str, list[float]] = {name: [] for name in THREAD_SETTINGS}
        ran_with: dict[str, str] = {}
        with beside(busy):
            for _ in range(rounds):
                for name, settings in THREAD_SETTINGS.items():
                    rate, ran_with[name] = step_rate(settings)
                    rates[name].append(rate)
        default = statistics.median(rates["torch's default"])
        for name in THREAD_SETTINGS:
            median = statistics.median(rates[name])
            print(f"{'one busy process' if busy else 'nothing':<20}{name:<28}{ran_with[name]:<26}"
                  f"{median:>9.0f}{median / default:>11.2f}x")


def quickstart_section(rounds: int, n_trials: int | None) -> None:
    trials = f"{n_trials} trials per method" if n_trials else "the spec's trials"
    print(f"\n## quickstart: `classp study run` + `classp study confirm` of {QUICK_START.name} "
          f"({trials}), seconds, median of {rounds} rounds")
    print(f"{'beside':<20}{'setting':<28}{'seconds':>9}{'speed-up':>12}")
    for busy in (False, True):
        seconds: dict[str, list[float]] = {"torch's default": [], "classp's choice": []}
        with beside(busy):
            for _ in range(rounds):
                for name in seconds:
                    seconds[name].append(quick_start_seconds(THREAD_SETTINGS[name], n_trials))
        default = statistics.median(seconds["torch's default"])
        for name, values in seconds.items():
            median = statistics.median(values)
            print(f"{'one busy process' if busy else 'nothing':<20}{name:<28}{median:>9.1f}"
                  f"{default / median:>11.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sections", default="threads,quickstart")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--n-trials", type=int, default=None, help="quickstart: trials per method")
    args = parser.parse_args()
    import torch

    print(f"torch {torch.__version__}, {CORES} cores, load average {os.getloadavg()[0]:.2f} at start")
    sections = args.sections.split(",")
    if "threads" in sections:
        threads_section(args.rounds)
    if "quickstart" in sections:
        quickstart_section(args.rounds, args.n_trials)


if __name__ == "__main__":
    main()
