"""Study throughput on the machine it runs on: per step, per trial, per GPU-hour.

The paper's vision protocol as published (MNIST 4 epochs then Fashion-MNIST 1, batch 32,
file order, the whole training sets, the published CNN, CLASSP with the published rule
and schedule): 9,375 steps and three evaluations of every split per trial at full scale.

1. ms per training step, averaged over the steps of the first task:
   - bare: forward, backward and an SGD step on one preloaded batch, nothing else
     (eager, and on CUDA replayed from a CUDA graph);
   - the engine (`classp.engine.run`), eager and graphed (classp.stepping);
   - the published pipeline: torchvision datasets with per-sample transforms behind a
     DataLoader, each batch copied to the device.
2. seconds per full trial through the engine, eager and graphed, and the GPU memory one
   trial holds at its peak.
3. trials per hour (per GPU-hour on a GPU) of a real study (`classp study run --workers
   N --population K`, Optuna journal + MLflow SQLite store, everything logged) at each N
   and K given (each worker trains K trials at a time as one batched model), and the GPU
   memory each worker process used at its peak (nvidia-smi).

On a CPU it runs the same at a subsample, so that it is tested (tests/test_benchmarks.py).
Measured, not asserted:

    python benchmarks/gpu_throughput.py [--subsample 1] [--workers 1,2,4,8,16]
        [--populations 1] [--trials-per-worker 2] [--sections steps,trial,workers]
        [--data-dir DIR]

A worker runs at least one whole population: N workers and population K run N * max(K,
trials per worker) trials.

It needs MNIST in the data folder (`classp data mnist DIR`) and Fashion-MNIST (`classp data
fashion-mnist DIR`, or Debian's dataset-fashion-mnist, found without a flag).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch
from torch.nn import functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "platform"))

from classp.data import DataOptions, default_data_dir, load_sequence  # noqa: E402
from classp.data.vision import MEAN, STD  # noqa: E402
from classp.engine import RunConfig, run  # noqa: E402
from classp.methods import build_method  # noqa: E402
from classp.models import build_model  # noqa: E402
from classp.run_config import resolve_device  # noqa: E402

SPEC = REPO / "benchmarks" / "specs" / "paper-protocol-study.toml"
METHOD = {"lr": 0.2, "threshold": 0.5, "power": 1.0, "eps": 1e-5, "schedule": "published",
          "rule": "reference-code"}
MODEL = "paper-cnn-published"


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def bare_step_ms(sequence, device, steps: int, graphed: bool) -> float:
    """Forward, backward, SGD step on one preloaded batch of 32: the floor."""
    torch.manual_seed(0)
    model = build_model(MODEL, sequence.input).to(device).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = sequence.tasks[0].train.x[:32].to(device), sequence.tasks[0].train.y[:32].to(device)

    def step():
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()

    if graphed:
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(3):
                optimizer.zero_grad(set_to_none=True)
                step()
        torch.cuda.current_stream().wait_stream(stream)
        optimizer.zero_grad(set_to_none=True)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            step()
        one = graph.replay
    else:
        def one():
            optimizer.zero_grad(set_to_none=True)
            step()
    for _ in range(10):
        one()
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        one()
    _sync(device)
    return 1000 * (time.perf_counter() - start) / steps


class StepClock:
    """Times the engine's steps within the first task from its step events (each event
    follows a host read, so the GPU has caught up): the first window is left out (warm-up,
    graph capture)."""

    def __init__(self):
        self.marks: list[tuple[int, float]] = []

    def on_run_start(self, *args): ...
    def on_task_end(self, event): ...
    def on_run_end(self, result): ...

    def on_step(self, event):
        if event.task == 0:
            self.marks.append((event.step, time.perf_counter()))

    def ms_per_step(self) -> float:
        (s0, t0), (s1, t1) = self.marks[1], self.marks[-1]
        return 1000 * (t1 - t0) / max(s1 - s0, 1)


def engine_trial(sequence, device, mode: str) -> tuple[float, float, object, int]:
    """(ms per step, seconds for the whole trial, result, peak GPU bytes)."""
    clock = StepClock()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    result = run(RunConfig(sequence="mnist-fmnist", method="classp", method_params=METHOD,
                           protocol="paper", device=str(device), step_mode=mode, seed=0,
                           eval_splits=("test",), track_updates=True, log_every=25),
                 [clock], sequence=sequence)
    peak = torch.cuda.max_memory_allocated() if device.type == "cuda" else 0
    return clock.ms_per_step(), result.seconds, result, peak


def published_pipeline_ms(root: Path, sequence, device, steps: int) -> float:
    """The published experiment's way: per-sample transforms behind a DataLoader, each batch
    copied to the device, the same model and optimizer."""
    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms

    tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize((MEAN,), (STD,))])
    loader = DataLoader(datasets.MNIST(str(root), train=True, transform=tf), batch_size=32)
    torch.manual_seed(0)
    model = build_model(MODEL, sequence.input).to(device).train()
    method = build_method("classp", METHOD)
    optimizer = method.optimizer(list(model.parameters()))
    warmup = 10

    def batches():  # as many epochs as the steps asked for need (a small subsample)
        while True:
            yield from loader

    done, start = 0, None
    for x, y in batches():
        if done == warmup:
            _sync(device)
            start = time.perf_counter()
        x, y = x.to(device), y.to(device)
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
        done += 1
        if done == steps + warmup:
            break
    _sync(device)
    return 1000 * (time.perf_counter() - start) / steps


class GpuMemoryWatch:
    """Peak GPU memory per process, sampled from nvidia-smi while a study runs (MiB)."""

    def __init__(self):
        self.peak: dict[str, int] = {}
        self.available = shutil.which("nvidia-smi") is not None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self):
        if self.available:
            self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        if self.available:
            self._thread.join(timeout=5)

    def _watch(self):
        while not self._stop.wait(0.5):
            out = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,used_memory",
                                  "--format=csv,noheader,nounits"], capture_output=True, text=True)
            for line in out.stdout.splitlines():
                parts = [p.strip() for p in line.split(",")]
                if len(parts) == 2 and parts[1].isdigit():
                    self.peak[parts[0]] = max(self.peak.get(parts[0], 0), int(parts[1]))


def study_throughput(workers: int, trials: int, root: Path, subsample: float,
                     population: int = 1) -> dict:
    """Wall time of `classp study run --workers N --population K` for `trials` trials, from
    a fresh store."""
    with tempfile.TemporaryDirectory(prefix="classp-throughput-") as home:
        spec = Path(home) / "spec.toml"
        text = SPEC.read_text()
        if subsample < 1:
            text = text.replace('protocol = "paper"', f'protocol = "paper"\nsubsample = {subsample}')
        spec.write_text(text)
        env = {**os.environ, "CLASSP_HOME": home, "CLASSP_DATA": str(root),
               "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO / "platform"),
                                                           os.environ.get("PYTHONPATH")]))}
        with GpuMemoryWatch() as memory:
            start = time.perf_counter()
            done = subprocess.run([sys.executable, "-m", "classp.cli", "study", "run", str(spec),
                                   "--n-trials", str(trials), "--workers", str(workers),
                                   "--population", str(population)],
                                  capture_output=True, text=True, env=env)
            seconds = time.perf_counter() - start
        if done.returncode != 0:
            raise SystemExit(f"the study with {workers} workers, population {population} failed:\n{done.stdout[-3000:]}"
                             f"\n{done.stderr[-3000:]}")
        finished = sum(f"{trials} trials ({trials} finished" in line for line in done.stdout.splitlines())
        busy = _trial_span_seconds(Path(home) / "optuna.journal")
        return {"workers": workers, "population": population, "trials": trials, "seconds": seconds,
                "per_hour": 3600 * trials / seconds, "all_finished": finished > 0,
                "steady_per_hour": 3600 * trials / busy,
                "peak_mib": max(memory.peak.values()) if memory.peak else None}


def _trial_span_seconds(journal: Path) -> float:
    """From the first trial's start to the last trial's end, from Optuna's own records: the
    study without the workers' start-up (imports, data loading, CUDA context)."""
    import optuna

    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))
    trials = [t for s in optuna.get_all_study_summaries(storage)
              for t in optuna.load_study(study_name=s.study_name, storage=storage).get_trials()]
    start = min(t.datetime_start for t in trials)
    end = max(t.datetime_complete for t in trials)
    return (end - start).total_seconds()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--subsample", type=float, default=1.0)
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--workers", default="1,2,4,8,16")
    parser.add_argument("--populations", default="1",
                        help="population sizes K to run the study with (trials trained K at a "
                             "time as one batched model), e.g. 1,16,64")
    parser.add_argument("--trials-per-worker", type=int, default=2)
    parser.add_argument("--bare-steps", type=int, default=2000)
    parser.add_argument("--sections", default="steps,trial,workers")
    args = parser.parse_args(argv)
    sections = set(args.sections.split(","))
    device = resolve_device(args.device)
    root = args.data_dir or default_data_dir()
    sequence = load_sequence("mnist-fmnist", DataOptions(data_dir=root, protocol="paper",
                                                         subsample=args.subsample))
    on = (torch.cuda.get_device_name(device) if device.type == "cuda"
          else f"CPU ({torch.get_num_threads()} threads)")
    mps = " under CUDA MPS" if os.environ.get("CUDA_MPS_PIPE_DIRECTORY") else ""
    scale = "full data" if args.subsample == 1 else f"subsample {args.subsample:g}"
    steps = sum(e * -(-len(t.train) // 32) for e, t in zip(sequence.protocol.epochs, sequence.tasks))
    print(f"device: {on}{mps}; torch {torch.__version__}; mnist-fmnist, paper protocol, {scale} "
          f"({steps} steps per trial)")

    if "steps" in sections or "trial" in sections:
        rows = [("bare step (forward, backward, SGD), eager", bare_step_ms(sequence, device, args.bare_steps, False))]
        if device.type == "cuda":
            rows.append(("bare step, CUDA graph", bare_step_ms(sequence, device, args.bare_steps, True)))
        eager_ms, eager_s, _, _ = engine_trial(sequence, device, "eager")
        graphed_ms, graphed_s, graphed, peak = engine_trial(sequence, device, "graphed")
        rows += [("engine step, eager", eager_ms), ("engine step, graphed", graphed_ms),
                 ("published pipeline step (DataLoader)",
                  published_pipeline_ms(root, sequence, device, min(600, args.bare_steps)))]
        print("\n| ms per step (batch 32) | ms |\n|---|---:|")
        for name, ms in rows:
            print(f"| {name} | {ms:.3f} |")
        print("\n| one full trial through the engine | seconds |\n|---|---:|")
        print(f"| eager | {eager_s:.1f} |")
        print(f"| graphed ({graphed.step_counts.get('replayed', 0)} steps replayed, "
              f"{graphed.step_counts.get('eager', 0)} eager) | {graphed_s:.1f} |")
        if device.type == "cuda":
            print(f"\npeak GPU memory allocated by one graphed trial: {peak / 2**20:.0f} MiB")
        for note in graphed.notes:
            print(f"note: {note}")

    if "workers" in sections:
        unit = "GPU-hour" if device.type == "cuda" else "hour"
        print(f"\n| workers{mps} | population | trials | wall s (with start-up) | trials per {unit} | "
              f"steady trials per {unit} (first trial start to last end) | peak GPU MiB per worker |"
              "\n|---:|---:|---:|---:|---:|---:|---:|")
        for k in [int(p) for p in args.populations.split(",")]:
            for n in [int(w) for w in args.workers.split(",")]:
                r = study_throughput(n, n * max(k, args.trials_per_worker), root, args.subsample, k)
                peak = "-" if r["peak_mib"] is None else str(r["peak_mib"])
                flag = "" if r["all_finished"] else " (not all finished)"
                print(f"| {n} | {k} | {r['trials']}{flag} | {r['seconds']:.0f} | {r['per_hour']:.0f} | "
                      f"{r['steady_per_hour']:.0f} | {peak} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
