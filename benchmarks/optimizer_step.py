"""Step time of CLASSP against torch's Adagrad and SGD and a published-style Python loop.

Measured, not asserted. Every row is timed in the same process, interleaved round by
round so that machine noise hits all rows alike: the median of the rounds, their range,
and the ratio to `torch.optim.Adagrad(fused=True)` (the fastest thing a user could pick)
and to Adagrad foreach, on the same model.

    python benchmarks/optimizer_step.py [--rounds 7] [--steps 50] [--device cpu]

Targets: CLASSP as a user constructs it (no `foreach` argument) within 1.5x of fused
Adagrad on the paper CNN (the `fused=True` row: compiled by torch.compile in the warm-up
steps, which are not timed); >= 3x faster than the published-style loop on the MLP of 200
small tensors. On a CPU, Adagrad's foreach path allocates fresh multi-megabyte
temporaries every step, and whether glibc hands back touched or fresh pages varies from
process to process: its time swings several-fold from run to run.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from classp import CLASSP
from classp.models import PaperCNN
from classp.published import PublishedCLASSP

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
            ps, lr=0.2, threshold=THRESHOLD, power=1.0, eps=1e-5, decay=False, rule="algorithm"),
        "classp as the README, fused=True (compiled)": lambda ps: CLASSP(
            ps, lr=0.2, threshold=THRESHOLD, power=1.0, eps=1e-5, decay=False, rule="algorithm",
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
    base = statistics.median(samples["adagrad fused (baseline)"])
    foreach = statistics.median(samples["adagrad foreach"])
    print(f"\n{label}: {n_params:,} parameters in {n_tensors} tensors, device {device}, "
          f"median of {rounds} rounds x {steps} steps")
    print(f"{'optimizer':<48} {'ms/step':>9} {'range of rounds':>17} {'x adagrad fused':>16} "
          f"{'x adagrad foreach':>18}")
    for name in rows:
        t = statistics.median(samples[name])
        spread = f"{min(samples[name]) * 1e3:.3f}-{max(samples[name]) * 1e3:.3f}"
        print(f"{name:<48} {t * 1e3:>9.3f} {spread:>17} {t / base:>16.2f} {t / foreach:>18.2f}")
    published = statistics.median(samples["published-style loop p=1"])
    ours = statistics.median(samples["classp algorithm p=1 foreach"])
    print(f"published-style loop / classp algorithm p=1 foreach: {published / ours:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    bench_model("(a) paper CNN", PaperCNN, args.rounds, args.steps, device)
    bench_model("(b) MLP of 200 small tensors", mlp_of_200_tensors, args.rounds, args.steps, device)


if __name__ == "__main__":
    main()
