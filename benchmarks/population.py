"""What pays on this machine: threads and their wait policy, and the quick start end to end.

Sections (each measured in one run, configurations interleaved round by round, medians
reported, ratios against torch's default measured in the same run):

* ``threads``: training steps per second of one quick-start run (permuted-digits, CLASSP,
  the digits MLP, 3 epochs; a warm-up run first, in the same process) with torch's default
  (every core, OpenMP's spin-then-sleep wait), every core with a passive wait, one thread,
  and the platform's own choice (classp.threads), alone and beside one busy process (a
  Python loop keeping one core busy). Each configuration runs in a fresh interpreter,
  since OpenMP reads its wait policy once, when it loads.
* ``members``: model-steps per second of K runs trained as one population
  (classp.population) against the same K runs trained one after another, for K = 1, 4,
  16, 64: the quick start's digits MLP (permuted-digits, CLASSP with a different lr per
  member) and, with ``--data-dir`` holding MNIST, the split-MNIST reference protocols'
  2x400 MLP at batch 128 on split MNIST (a quarter of the data, one epoch per task) and
  the paper's CNN at batch 32 (2% of the data). On a GPU also K = 256 (64 for the CNN),
  the population in bfloat16 autocast, and the peak GPU memory allocated per member.
* ``quickstart``: the README's quick start (``classp study run`` then ``classp study
  confirm`` of studies/permuted-digits.toml on a fresh home) in seconds: the code of
  ``--baseline-ref`` (a git commit, run from an export of it; default: the last commit
  before threads and populations) with torch's default threads, against this checkout
  with the platform's thread choice, one trial at a time and in populations of
  ``--population``; alone and beside one busy process.

    python benchmarks/population.py [--sections threads,members,quickstart] [--rounds 3]
        [--n-trials N]   # quickstart: trials per method; default: the spec's
        [--population K] [--baseline-ref REF] [--data-dir DIR] [--device auto]

Measured, never asserted (the README and the issue notes hold the numbers).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tarfile
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


BASELINE_REF = "fffbf4d"  # the last commit before the thread choice and populations


def clean_environment(platform: Path = REPO / "platform", **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMP_", "CLASSP_THREADS"))}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(platform), env.get("PYTHONPATH")) if p)
    return {**env, **extra}


@contextmanager
def exported(ref: str):
    """The package and the specs as they were at `ref` (git archive), in a temporary folder."""
    with tempfile.TemporaryDirectory() as folder:
        archive = subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", ref,
                                  "platform", "studies"], capture_output=True, check=True).stdout
        tar_path = Path(folder) / "ref.tar"
        tar_path.write_bytes(archive)
        with tarfile.open(tar_path) as tar:
            tar.extractall(folder, filter="data")
        yield Path(folder)


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


def quick_start_seconds(code: Path, settings: dict[str, str], n_trials: int | None,
                        population: int | None) -> float:
    """The quick start with the package and spec under `code` (a checkout or an export)."""
    spec = code / "studies" / QUICK_START.name
    with tempfile.TemporaryDirectory() as home:
        env = clean_environment(code / "platform", CLASSP_HOME=home, **settings)
        command = [sys.executable, "-m", "classp.cli", "study"]
        extra = ["--n-trials", str(n_trials)] if n_trials else []
        together = ["--population", str(population)] if population else []
        start = time.perf_counter()
        subprocess.run(command + ["run", str(spec), "--no-progress", *extra, *together],
                       env=env, check=True, capture_output=True)
        subprocess.run(command + ["confirm", str(spec), *together], env=env, check=True,
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


def quickstart_section(rounds: int, n_trials: int | None, population: int, baseline_ref: str) -> None:
    trials = f"{n_trials} trials per method" if n_trials else "the spec's trials"
    print(f"\n## quickstart: `classp study run` + `classp study confirm` of {QUICK_START.name} "
          f"({trials}), seconds, median of {rounds} rounds")
    print(f"{'beside':<20}{'code and setting':<52}{'seconds':>9}{'speed-up':>10}")
    with exported(baseline_ref) as baseline:
        variants = {
            f"{baseline_ref}, torch's default threads": (baseline, THREAD_SETTINGS["torch's default"], None),
            "this checkout, classp's threads, population 1": (REPO, {}, 1),
            f"this checkout, classp's threads, population {population}": (REPO, {}, population),
        }
        for busy in (False, True):
            seconds: dict[str, list[float]] = {name: [] for name in variants}
            with beside(busy):
                for _ in range(rounds):
                    for name, (code, settings, size) in variants.items():
                        seconds[name].append(quick_start_seconds(code, settings, n_trials, size))
            baseline_seconds = statistics.median(next(iter(seconds.values())))
            for name, values in seconds.items():
                median = statistics.median(values)
                print(f"{'one busy process' if busy else 'nothing':<20}{name:<52}{median:>9.1f}"
                      f"{baseline_seconds / median:>9.2f}x", flush=True)


MEMBER_PROBE = """
import math, sys, time
import torch
from classp.data import DataOptions, load_sequence
from classp.engine import RunConfig, run
from classp.population import run_population
from classp.run_config import resolve_device
sequence_name, model, batch_size, subsample, data_dir, K, device, bf16 = sys.argv[1:9]
K, batch_size, subsample = int(K), int(batch_size), float(subsample)
device = resolve_device(device)
sequence = load_sequence(sequence_name, DataOptions(data_dir=data_dir or None, subsample=subsample))
configs = [RunConfig(sequence=sequence_name, method="classp", seed=k, epochs=1, model=model,
                     batch_size=batch_size, subsample=subsample, device=str(device),
                     method_params={"rule": "algorithm", "lr": 0.01 * (1 + k % 7)}) for k in range(K)]

def timed(work):
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    out = work()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return out, time.perf_counter() - start

run(configs[0], sequence=sequence)  # warm-up: first-call costs
steps, separate = timed(lambda: sum(run(c, sequence=sequence).steps for c in configs))
if device.type == "cuda":
    torch.cuda.reset_peak_memory_stats(device)
together, population = timed(lambda: sum(r.steps for r in run_population(configs, sequence=sequence)))
assert steps == together
peak = torch.cuda.max_memory_allocated(device) / K / 2**20 if device.type == "cuda" else math.nan
rate_bf16 = math.nan
if bf16 == "bf16":  # the same population with its products in bfloat16 (autocast)
    with torch.autocast(device.type, dtype=torch.bfloat16):
        together, seconds = timed(lambda: sum(r.steps for r in run_population(configs, sequence=sequence)))
    rate_bf16 = together / seconds
print(steps / separate, steps / population, rate_bf16, peak)
"""


def members_section(data_dir: str | None, device: str) -> None:
    import torch

    gpu = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    print("\n## members: model-steps per second, K runs as one population against the same K runs one "
          "after another (CLASSP, a different lr per member; one epoch per task, evaluations included)"
          + ("; on the GPU also the population in bfloat16 autocast, and the peak GPU memory "
             "allocated per member" if gpu else ""))
    print(f"{'model':<44}{'K':>4}{'separate':>10}{'population':>12}{'speed-up':>10}"
          + (f"{'bf16 population':>17}{'MiB per member':>16}" if gpu else ""))
    more = (256,) if gpu else ()  # a GPU has room for wider populations
    # (label, sequence, model, batch size, share of the data, population sizes)
    cases = [("digits MLP 64-256-256-10, batch 32", "permuted-digits", "mlp", 32, 1.0, (1, 4, 16, 64, *more))]
    if data_dir:
        cases.append(("MNIST MLP 784-400-400-10, batch 128", "split-mnist", "mlp-400", 128, 0.25,
                      (1, 4, 16, *((64, *more) if gpu else ()))))
        cases.append(("paper CNN (1.2 M weights), batch 32", "split-mnist", "paper-cnn", 32, 0.02,
                      (1, 4, *((16, 64) if gpu else ()))))
    else:
        print("(no --data-dir: the MNIST MLP is left out)")
    for label, sequence, model, batch_size, subsample, sizes in cases:
        for K in sizes:
            done = subprocess.run([sys.executable, "-c", MEMBER_PROBE, sequence, model, str(batch_size),
                                   str(subsample), data_dir or "", str(K), device,
                                   "bf16" if gpu else "fp32"], capture_output=True,
                                  text=True, env=clean_environment(), check=True)
            separate, together, bf16, peak = map(float, done.stdout.split())
            extra = f"{bf16:>17.0f}{peak:>16.1f}" if gpu else ""
            print(f"{label:<44}{K:>4}{separate:>10.0f}{together:>12.0f}{together / separate:>9.2f}x{extra}",
                  flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sections", default="threads,members,quickstart")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--n-trials", type=int, default=None, help="quickstart: trials per method")
    parser.add_argument("--population", type=int, default=8, help="quickstart: population size")
    parser.add_argument("--baseline-ref", default=BASELINE_REF, help="quickstart: the code before")
    parser.add_argument("--data-dir", default=None, help="members: a folder holding MNIST")
    parser.add_argument("--device", default="auto",
                        help="members: auto (a GPU if there is one), cpu or cuda[:N]")
    args = parser.parse_args()
    import torch

    print(f"torch {torch.__version__}, {CORES} cores, load average {os.getloadavg()[0]:.2f} at start")
    sections = args.sections.split(",")
    if "threads" in sections:
        threads_section(args.rounds)
    if "members" in sections:
        members_section(args.data_dir, args.device)
    if "quickstart" in sections:
        quickstart_section(args.rounds, args.n_trials, args.population, args.baseline_ref)


if __name__ == "__main__":
    main()
