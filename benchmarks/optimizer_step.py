"""Step time of CLASSP against torch's Adagrad and SGD and a published-style Python loop.

Measured, not asserted. Every row is timed in the same process, interleaved round by
round so that machine noise hits all rows alike: the median of the rounds, their range,
and the ratio to `torch.optim.Adagrad(fused=True)` (the fastest thing a user could pick)
and to Adagrad foreach, on the same model.

    python benchmarks/optimizer_step.py [--rounds 7] [--steps 50] [--device cpu]

Two regimes. (a) and (b) time `step()` after `step()`, so a model's weights, gradients
and state stay in the CPU's caches between steps (the paper CNN's fit in a 32 MiB L3):
the cost of the arithmetic and the Python around it. (c) times each `step()` inside real
training on the paper CNN (zero_grad, forward and backward of a batch of 32 between
steps, as the paper's protocol does; only the step is timed): what a user's training
pays, with the caches holding what the backward pass left there.

Targets: CLASSP as a user constructs it (no `foreach` or `fused` argument: the README's
construction for the first task, and the defaults, which are its setting for the second)
within 1.5x of fused Adagrad on the paper CNN (the `fused=True` row: compiled by
torch.compile in the warm-up steps, which are not timed); >= 3x faster than the
published-style loop on the MLP of 200 small tensors. On a CPU, Adagrad's foreach path allocates fresh multi-megabyte
temporaries every step, and whether glibc hands back touched or fresh pages varies from
process to process: its time swings several-fold from run to run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

import torch
from torch import nn

from classp import CLASSP
from classp.models import PaperCNN
from classp.testing.published import PublishedCLASSP

THRESHOLD = 1e-6  # > 0 so that the per-weight mask is computed, as in a real CLASSP run


def mlp_of_200_tensors() -> nn.Module:
    # 100 Linear layers of 32 -> 32: 200 small tensors (weights and biases).
    return nn.Sequential(*[nn.Linear(32, 32) for _ in range(100)])


def contenders():
    def classp(foreach, power, rule):
        return lambda ps: CLASSP(ps, lr=0.01, threshold=THRESHOLD, power=power, rule=rule,
                                 foreach=foreach)

    rows = {
        "adagrad fused (baseline)": lambda ps: torch.optim.Adagrad(ps, lr=0.01, fused=True),
        "classp as the README constructs it": lambda ps: CLASSP(
            ps, lr=0.2, threshold=0.5, power=1.0, eps=1e-5, decay=False, rule="algorithm"),
        "classp defaults (README's 2nd task: decay on)": lambda ps: CLASSP(ps, lr=0.2),
        "classp as the README, track_updates (a study's)": lambda ps: CLASSP(
            ps, lr=0.2, threshold=0.5, power=1.0, eps=1e-5, decay=False, rule="algorithm",
            track_updates=True),
        "classp as the README, fused=True (compiled)": lambda ps: CLASSP(
            ps, lr=0.2, threshold=0.5, power=1.0, eps=1e-5, decay=False, rule="algorithm",
            fused=True),
        "adagrad foreach": lambda ps: torch.optim.Adagrad(ps, lr=0.01, foreach=True),
        "adagrad single-tensor": lambda ps: torch.optim.Adagrad(ps, lr=0.01, foreach=False),
        "sgd foreach": lambda ps: torch.optim.SGD(ps, lr=0.01, foreach=True),
        "sgd single-tensor": lambda ps: torch.optim.SGD(ps, lr=0.01, foreach=False),
    }
    for rule in ("algorithm", "reference-code", "equation"):
        for power in (1.0, 2.0):
            for foreach in (True, False):
                name = f"classp {rule} p={power:g} {'foreach' if foreach else 'single-tensor'}"
                rows[name] = classp(foreach, power, rule)
    rows["classp algorithm p=1 foreach +track_updates"] = lambda ps: CLASSP(
        ps, lr=0.01, threshold=THRESHOLD, foreach=True, track_updates=True
    )
    rows["published-style loop p=1"] = lambda ps: PublishedCLASSP(  # also the tests' oracle
        ps, lr=0.01, threshold=THRESHOLD, power=1.0, eps=1e-5
    )
    return rows


def time_steps(opt, steps: int, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        opt.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps


def print_rows(samples: dict[str, list[float]], ratios: dict[str, str]) -> None:
    """One line per row: the median of its rounds, their range, and its ratio to each
    baseline row (column title -> row name)."""
    widths = {title: max(16, len(title) + 1) for title in ratios}
    print(f"{'optimizer':<48} {'ms/step':>9} {'range of rounds':>17}"
          + "".join(f" {title:>{widths[title]}}" for title in ratios))
    medians = {name: statistics.median(times) for name, times in samples.items()}
    for name, times in samples.items():
        spread = f"{min(times) * 1e3:.3f}-{max(times) * 1e3:.3f}"
        print(f"{name:<48} {medians[name] * 1e3:>9.3f} {spread:>17}"
              + "".join(f" {medians[name] / medians[base]:>{widths[title]}.2f}"
                        for title, base in ratios.items()))


def bench_model(label: str, make_model, rounds: int, steps: int, device: torch.device) -> None:
    rows = contenders()
    optimizers = {}
    for name, make in rows.items():
        torch.manual_seed(0)
        model = make_model().to(device)
        for p in model.parameters():
            p.grad = torch.randn_like(p) * 1e-2
        optimizers[name] = make(list(model.parameters()))
        time_steps(optimizers[name], 3, device)  # warm-up: state allocation, first dispatch
    samples: dict[str, list[float]] = {name: [] for name in rows}
    for _ in range(rounds):
        for name, opt in optimizers.items():
            samples[name].append(time_steps(opt, steps, device))
    n_params = sum(p.numel() for p in make_model().parameters())
    n_tensors = len(list(make_model().parameters()))
    print(f"\n{label}: {n_params:,} parameters in {n_tensors} tensors, device {device}, "
          f"median of {rounds} rounds x {steps} steps")
    print_rows(samples, {"x adagrad fused": "adagrad fused (baseline)",
                         "x adagrad foreach": "adagrad foreach"})
    published = statistics.median(samples["published-style loop p=1"])
    ours = statistics.median(samples["classp algorithm p=1 foreach"])
    print(f"published-style loop / classp algorithm p=1 foreach: {published / ours:.2f}x")


IN_TRAINING = ("adagrad fused (baseline)", "classp as the README constructs it",
               "classp defaults (README's 2nd task: decay on)",
               "classp as the README, track_updates (a study's)",
               "classp as the README, fused=True (compiled)", "adagrad single-tensor",
               "sgd single-tensor")


def bench_in_training(rounds: int, steps: int, device: torch.device, batch: int = 32) -> None:
    """Each optimizer trains its own copy of the paper CNN on one fixed batch; only
    `step()` is timed, between the backward pass and the next forward."""
    rows = {name: make for name, make in contenders().items() if name in IN_TRAINING}
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(batch, 1, 28, 28, generator=gen).to(device)
    y = torch.randint(0, 10, (batch,), generator=gen).to(device)
    runs = {}
    for name, make in rows.items():
        torch.manual_seed(0)
        model = PaperCNN().to(device)
        runs[name] = (model, make(list(model.parameters())))

    def train(model, opt, n: int) -> float:
        spent = 0.0
        for _ in range(n):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            opt.step()
            if device.type == "cuda":
                torch.cuda.synchronize()
            spent += time.perf_counter() - start
        return spent / n

    for model, opt in runs.values():
        train(model, opt, 3)  # warm-up: state allocation, compilation of the fused path
    samples: dict[str, list[float]] = {name: [] for name in rows}
    for _ in range(rounds):
        for name, (model, opt) in runs.items():
            samples[name].append(train(model, opt, steps))
    print(f"\n(c) paper CNN in training: step() timed between backward passes (batch {batch}), "
          f"device {device}, median of {rounds} rounds x {steps} steps")
    print_rows(samples, {"x adagrad fused": "adagrad fused (baseline)"})


FIRST_STEP = """
import sys, time, torch
from classp import CLASSP
from classp.models import PaperCNN
model = PaperCNN()
for p in model.parameters():
    p.grad = torch.randn_like(p) * 1e-2
opt = CLASSP(model.parameters(), lr=0.2, threshold=0.5, decay=False, fused=True)
start = time.perf_counter()
opt.step()
first = time.perf_counter() - start
start = time.perf_counter()
opt.step()
print(first, time.perf_counter() - start)
"""


def fused_start_up() -> None:
    """The pause `fused=True` adds to a process: its first step compiles. Timed in fresh
    processes, with Inductor's on-disk cache empty (cold: a machine's first run) and
    then filled by that run (warm: every later process)."""
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=cache)
        runs = []
        for _ in ("cold", "warm"):
            out = subprocess.run([sys.executable, "-c", FIRST_STEP], env=env, check=True,
                                 capture_output=True, text=True).stdout.split()
            runs.append((float(out[0]), float(out[1])))
    (cold, _), (warm, second) = runs
    print(f"\nfused=True on the paper CNN, first step of a fresh process (compiles): "
          f"{cold:.1f} s with Inductor's disk cache cold, {warm:.1f} s warm; "
          f"the next step {second * 1e3:.2f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--training-steps", type=int, default=20,
                        help="steps per round in (c), each with a forward and backward pass")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    bench_model("(a) paper CNN", PaperCNN, args.rounds, args.steps, device)
    bench_model("(b) MLP of 200 small tensors", mlp_of_200_tensors, args.rounds, args.steps, device)
    bench_in_training(args.rounds, args.training_steps, device)
    if device.type == "cpu":
        fused_start_up()


if __name__ == "__main__":
    main()
