"""Trial time: our engine against the published experiment's pipeline, same data, same run.

The paper's vision protocol (MNIST 4 epochs, then Fashion-MNIST 1 epoch, batch 32, no
shuffling, the paper CNN, CLASSP lr 0.2 with the paper's schedule) runs twice:

* ours: `classp.engine.run` (tensors preloaded on the device, batches as index slices);
* published: torchvision datasets with per-sample `ToTensor` + `Normalize` transforms
  behind a `DataLoader(batch_size=32)`, the same model and optimizer.

Both evaluate on the training sets before training and after each task. A third timing,
a bare loop of only forward, backward and optimizer step over the same preloaded batches
(plus the same evaluations), gives the engine's overhead: the fraction of its wall time
spent on anything else. Measured, not asserted.

    python benchmarks/trial_time.py [--subsample 0.1] [--data-dir DIR] [--device cpu]

It needs the real MNIST in the data folder (`classp data mnist DIR` puts it there) and
Fashion-MNIST (Debian's dataset-fashion-mnist is found without a flag).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from torch.nn import functional as F

from classp.data import DataOptions, default_data_dir, load_sequence
from classp.data.idx import RAW_FILES
from classp.data.vision import MEAN, STD
from classp.engine import RunConfig, _channels_last, evaluate, resolve_device, run
from classp.methods import build_method
from classp.models import build_model

METHOD = {"lr": 0.2, "threshold": 0.5, "power": 1.0, "schedule": "paper", "rule": "reference-code"}


def stage_data(data_dir: Path | None) -> tuple[Path, str]:
    """The data folder holding MNIST (checked; a clear exit if it is missing)."""
    root = data_dir or default_data_dir()
    if not all((root / "MNIST" / "raw" / f).exists() for f in RAW_FILES):
        raise SystemExit(f"no MNIST under {root}/MNIST/raw: run `classp data mnist DIR` first "
                         f"(or pass --data-dir)")
    return root, ""


def published_pipeline(root: Path, sequence, device, subsample_index) -> float:
    """The published experiment's way: per-sample transforms behind a DataLoader."""
    from torch.utils.data import DataLoader, Subset
    from torchvision import datasets, transforms

    tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize((MEAN,), (STD,))])
    sets = [datasets.MNIST(str(root), train=True, transform=tf),
            datasets.FashionMNIST(str(root), train=True, transform=tf)]
    sets = [Subset(s, idx) for s, idx in zip(sets, subsample_index)]
    start = time.perf_counter()
    torch.manual_seed(0)
    model = build_model("paper-cnn", sequence.input).to(device)
    method = build_method("classp", METHOD)
    opt = method.optimizer(list(model.parameters()))

    def evaluate_all():
        model.eval()
        with torch.no_grad():
            for s in sets:
                correct = 0
                for x, y in DataLoader(s, batch_size=1024):
                    correct += (model(x.to(device)).argmax(1) == y.to(device)).sum().item()
        model.train()

    evaluate_all()
    for k, (ds, epochs) in enumerate(zip(sets, (4, 1))):
        method.begin_task(k, model, opt)
        for _ in range(epochs):
            for x, y in DataLoader(ds, batch_size=32, shuffle=False):
                x, y = x.to(device), y.to(device)
                opt.zero_grad()
                F.cross_entropy(model(x), y).backward()
                opt.step()
        evaluate_all()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def bare_loop(sequence, device) -> float:
    """Only forward, backward and step over the engine's own preloaded batches, plus the
    same evaluations: the floor the engine's time is compared with."""
    # The engine's own memory format (channels last), so that only the loop around
    # forward/backward/step differs.
    sequence = _channels_last(sequence.to(device))
    start = time.perf_counter()
    torch.manual_seed(0)
    model = build_model("paper-cnn", sequence.input).to(device)
    model = model.to(memory_format=torch.channels_last)
    method = build_method("classp", METHOD)
    opt = method.optimizer(list(model.parameters()))
    for t in sequence.tasks:
        evaluate(model, t.train, 1024)
    for k, epochs in enumerate((4, 1)):
        method.begin_task(k, model, opt)
        train = sequence.tasks[k].train
        for _ in range(epochs):
            for s in range(0, len(train), 32):
                opt.zero_grad()
                F.cross_entropy(model(train.x[s:s + 32]), train.y[s:s + 32]).backward()
                opt.step()
        for t in sequence.tasks:
            evaluate(model, t.train, 1024)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subsample", type=float, default=0.1)
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    device = resolve_device(args.device)
    root, note = stage_data(args.data_dir)
    sequence = load_sequence("mnist-fmnist", DataOptions(data_dir=root, subsample=args.subsample,
                                                         val_fraction=0.1))
    # The published pipeline reads the same samples: recover their indices in the raw sets.
    from classp.data.base import subsample_split

    def indices(n_raw: int) -> list[int]:
        # The same fixed permutations as carve_validation and subsample_split.
        order = torch.randperm(n_raw, generator=torch.Generator().manual_seed(0))
        n_val = max(1, round(n_raw * 0.1))
        train_idx = order[n_val:]
        kept = subsample_split(
            type(sequence.tasks[0].train)(train_idx.unsqueeze(1), train_idx), args.subsample)
        return kept.y.tolist()

    raw_sizes = [10000 if note else 60000, 60000]
    subsample_index = [indices(n) for n in raw_sizes]
    assert [len(i) for i in subsample_index] == [len(t.train) for t in sequence.tasks]

    config = RunConfig(sequence="mnist-fmnist", method="classp", method_params=METHOD,
                       eval_splits=(), eval_train=True, device=str(device))
    ours, published, bare = [], [], []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        run(config, sequence=sequence)
        if device.type == "cuda":
            torch.cuda.synchronize()
        ours.append(time.perf_counter() - t0)
        bare.append(bare_loop(sequence, device))
        published.append(published_pipeline(root, sequence, device, subsample_index))
    steps = sum(e * -(-len(t.train) // 32) for e, t in zip((4, 1), sequence.tasks))
    o, p, b = min(ours), min(published), min(bare)
    title = f"mnist-fmnist, subsample {args.subsample:g}, {steps} steps, device {device}"
    print(title + (f" ({note})" if note else ""))
    print(f"{'pipeline':<34}{'seconds':>9}{'ms/step':>9}{'x published':>13}")
    for name, t in (("published (DataLoader+transforms)", p), ("ours (engine.run)", o),
                    ("bare forward/backward/step", b)):
        print(f"{name:<34}{t:>9.2f}{t / steps * 1e3:>9.2f}{t / p:>13.2f}")
    # Signed: a negative value means the engine ran faster than the bare loop (noise).
    print(f"engine overhead (not forward/backward/step/eval): {(o - b) / o * 100:+.1f}%")


if __name__ == "__main__":
    main()
