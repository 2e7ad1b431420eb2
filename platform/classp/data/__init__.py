"""Task sequences by name: `load_sequence("split-digits", DataOptions())`."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from classp.data.base import (
    Split,
    Task,
    TaskSequence,
    TrainingProtocol,
    carve_validation,
    permuted_tasks,
    split_by_classes,
    subsample_task,
)
from classp.errors import UserError
from classp.models import InputShape
from classp.scenarios import check_scenario

__all__ = ["SEQUENCES", "PROTOCOLS", "DataOptions", "Split", "Task", "TaskSequence",
           "TrainingProtocol", "load_sequence", "task_count", "default_data_dir"]

PAIRS = [(0, 1), (2, 3), (4, 5), (6, 7), (8, 9)]
# "study" exists for every sequence; each other protocol reruns a published setup on the
# sequences it was published for (docs/protocols.md names the sources).
PROTOCOL_SEQUENCES = {
    "study": None,
    "paper": ("mnist-fmnist", "fpb-imdb"),  # Ludwig 2024's scripts
    "hsu2018": ("split-mnist",),  # Hsu et al. 2018, "Re-evaluating continual learning scenarios"
    "vandeven2022": ("split-mnist", "permuted-mnist"),  # van de Ven et al. 2022, "Three types ..."
}
PROTOCOLS = tuple(PROTOCOL_SEQUENCES)
IMDB_LABELS = ("corrected", "published")
TOKENIZERS = ("whitespace", "spacy")

# The published text script's loss targets: FPB below 0.005, then IMDB below a target
# chosen per optimizer (so that IMDB accuracy lands near 85% for every one).
PUBLISHED_TEXT_LOSS_TARGETS = {"classp": (0.005, 0.28), "sgd": (0.005, 0.32),
                               "adam": (0.005, 0.48), "ewc": (0.005, 0.37)}


def default_data_dir() -> Path:
    return Path(os.environ.get("CLASSP_DATA") or Path.home() / ".cache" / "classp" / "data")


@dataclass(frozen=True)
class DataOptions:
    data_dir: Path | None = None  # None: $CLASSP_DATA or ~/.cache/classp/data
    download: bool = False
    num_tasks: int | None = None  # permuted sequences: how many tasks (default 5)
    val_fraction: float = 0.1
    subsample: float = 1.0  # keep this fraction of every split (quick runs on a CPU)
    fpb_source: str = "takala/financial_phrasebank:sentences_50agree"
    imdb_source: str = "stanfordnlp/imdb"
    protocol: str = "study"  # or "paper": see TrainingProtocol
    # IMDB's labels: "corrected" maps pos -> FPB's positive (2); "published" maps pos ->
    # 1, FPB's neutral, as the published script did.
    imdb_labels: str = "corrected"
    # Split sequences: "task", "domain" or "class" incremental (classp.scenarios); None: the
    # sequence's own (class for split sequences, domain for the others).
    scenario: str | None = None

    @property
    def root(self) -> Path:
        return Path(self.data_dir) if self.data_dir else default_data_dir()


def _val_fraction(opts: DataOptions) -> float:
    """The published protocols train on whole training sets and report the test sets."""
    return opts.val_fraction if opts.protocol == "study" else 0.0


def _vision_task(name: str, label: str, opts: DataOptions, pixels=None) -> Task:
    from classp.data.vision import PAPER_PIXELS, load_torchvision

    train_x, train_y, test_x, test_y = load_torchvision(name, opts.root, opts.download,
                                                        pixels or PAPER_PIXELS)
    train, val = carve_validation(train_x, train_y, _val_fraction(opts))
    return Task(label, train, val, Split(test_x, test_y))


def _image_input(task: Task, num_classes: int = 10) -> InputShape:
    return InputShape("image", tuple(task.train.x.shape[1:]), num_classes)


def _mnist_fmnist(opts: DataOptions) -> TaskSequence:
    tasks = [_vision_task("MNIST", "mnist", opts), _vision_task("FashionMNIST", "fmnist", opts)]
    if opts.protocol == "paper":
        protocol = TrainingProtocol(epochs=(4, 1), batch_size=32, shuffle=False,
                                    model="paper-cnn-published", eval_train=True, name="paper",
                                    train_eval_mode="train")
    else:
        protocol = TrainingProtocol(epochs=(4, 1), batch_size=32, shuffle=False,
                                    model="paper-cnn", eval_train=True)
    return TaskSequence("mnist-fmnist", tasks, _image_input(tasks[0]), protocol)


def _split(dataset: str, label: str, opts: DataOptions) -> TaskSequence:
    from classp.data import vision

    if opts.protocol == "hsu2018":
        # Hsu et al.: MNIST padded to 32x32, MLP 1024-400-400, 4 epochs per task, batch
        # 128, shuffled; trained on the whole training set, reported on the test set.
        pixels = vision.HSU2018_PIXELS
        protocol = TrainingProtocol(epochs=(4,) * len(PAIRS), batch_size=128, shuffle=True,
                                    model="mlp-400", name="hsu2018")
    elif opts.protocol == "vandeven2022":
        # van de Ven et al.: 28x28 in [0, 1], MLP 784-400-400, 2,000 iterations of batch
        # 128 per task with Adam (the method's lr: 1e-3 in their table).
        pixels = vision.UNIT_PIXELS
        protocol = TrainingProtocol(epochs=(1,) * len(PAIRS), batch_size=128, shuffle=True,
                                    model="mlp-400", name="vandeven2022",
                                    iterations=(2000,) * len(PAIRS))
    else:
        pixels, protocol = None, TrainingProtocol(epochs=(1,) * len(PAIRS), model="mlp")
    tasks = split_by_classes(_vision_task(dataset, label, opts, pixels), PAIRS, prefix=f"{label}-")
    return TaskSequence(f"split-{label}", tasks, _image_input(tasks[0]), protocol,
                        scenario="class")


def _permuted(dataset: str, label: str, opts: DataOptions) -> TaskSequence:
    from classp.data import vision

    if opts.protocol == "vandeven2022":
        # van de Ven et al.: 32x32 in [0, 1], 10 tasks, MLP 1024-1000-1000, 5,000 iterations
        # of batch 128 per task with Adam (lr 1e-4 in their table).
        n = opts.num_tasks or 10
        pixels = vision.UNIT_PIXELS_32
        protocol = TrainingProtocol(epochs=(1,) * n, batch_size=128, shuffle=True,
                                    model="mlp-1000", name="vandeven2022",
                                    iterations=(5000,) * n)
    else:
        n = opts.num_tasks or 5
        pixels, protocol = None, TrainingProtocol(epochs=(1,) * n, model="mlp")
    tasks = permuted_tasks(_vision_task(dataset, label, opts, pixels), n, prefix=f"{label}-p")
    return TaskSequence(f"permuted-{label}", tasks, _image_input(tasks[0]), protocol)


def _split_digits(opts: DataOptions) -> TaskSequence:
    from classp.data.digits import load_digits_task

    tasks = split_by_classes(load_digits_task(), PAIRS, prefix="digits-")
    return TaskSequence("split-digits", tasks, _image_input(tasks[0]),
                        TrainingProtocol(epochs=(5,) * len(tasks), batch_size=32, model="mlp"),
                        scenario="class")


def _permuted_digits(opts: DataOptions) -> TaskSequence:
    from classp.data.digits import load_digits_task

    n = opts.num_tasks or 5
    tasks = permuted_tasks(load_digits_task(), n, prefix="digits-p")
    return TaskSequence("permuted-digits", tasks, _image_input(tasks[0]),
                        TrainingProtocol(epochs=(3,) * n, batch_size=32, model="mlp"))


def _fpb_imdb(opts: DataOptions) -> TaskSequence:
    from classp.data.text import TextSource, load_text_tasks

    # IMDB is neg/pos; FPB is 0 negative, 1 neutral, 2 positive.
    imdb_map = {0: 0, 1: 1} if opts.imdb_labels == "published" else {0: 0, 1: 2}
    sources = [TextSource("fpb", _local_or(opts, "financial_phrasebank", opts.fpb_source),
                          label_map={0: 0, 1: 1, 2: 2}),
               TextSource("imdb", _local_or(opts, "imdb", opts.imdb_source), label_map=imdb_map)]
    published = opts.protocol == "paper"
    tasks, vocab_size, tokenizer = load_text_tasks(sources, _val_fraction(opts), published=published,
                                                   download=opts.download)
    inp = InputShape("tokens", (tasks[0].train.x.shape[1],), 3, vocab_size)
    if published:
        protocol = TrainingProtocol(epochs=(100, 100), batch_size=750, shuffle=True,
                                    model="paper-transformer-published", eval_train=True,
                                    name="paper", train_eval_mode="train",
                                    loss_targets=PUBLISHED_TEXT_LOSS_TARGETS)
    else:
        protocol = TrainingProtocol(epochs=(1, 1), batch_size=32, shuffle=False,
                                    model="paper-transformer", eval_train=True)
    sequence = TaskSequence("fpb-imdb", tasks, inp, protocol)
    sequence.notes.append(f"tokens: {tokenizer}; IMDB labels: {opts.imdb_labels} "
                          f"(pos -> {'neutral, as published' if opts.imdb_labels == 'published' else 'positive'})")
    return sequence


def _local_or(opts: DataOptions, stem: str, default: str) -> str:
    """A local `<data-dir>/<stem>.{csv,parquet,jsonl}` wins over the dataset id."""
    for suffix in (".csv", ".parquet", ".jsonl"):
        candidate = opts.root / f"{stem}{suffix}"
        if candidate.exists():
            return str(candidate)
    return default


MAX_PERMUTED_TASKS = 100  # each task is a permuted copy of the whole data set

SEQUENCES: dict[str, Callable[[DataOptions], TaskSequence]] = {
    "mnist-fmnist": _mnist_fmnist,
    "fpb-imdb": _fpb_imdb,
    "split-mnist": lambda o: _split("MNIST", "mnist", o),
    "permuted-mnist": lambda o: _permuted("MNIST", "mnist", o),
    "split-fmnist": lambda o: _split("FashionMNIST", "fmnist", o),
    "permuted-fmnist": lambda o: _permuted("FashionMNIST", "fmnist", o),
    "split-digits": _split_digits,
    "permuted-digits": _permuted_digits,
}


def check_sequence_name(name: str) -> None:
    if name not in SEQUENCES:
        raise UserError(f"unknown sequence {name!r}; choose one of: {', '.join(SEQUENCES)}")


SPLIT_SEQUENCES = ("split-mnist", "split-fmnist", "split-digits")


def check_protocol(sequence: str, protocol: str) -> None:
    if protocol not in PROTOCOLS:
        raise UserError(f"unknown protocol {protocol!r}; choose one of: {', '.join(PROTOCOLS)}")
    published_for = PROTOCOL_SEQUENCES[protocol]
    if published_for is not None and sequence not in published_for:
        whose = "the paper's sequences" if protocol == "paper" else "the sequences it was published for"
        raise UserError(f"protocol {protocol!r} exists for {whose} only "
                        f"({', '.join(published_for)}), not {sequence!r}; use 'study'")


def check_data_options(name: str, opts: DataOptions) -> None:
    """Every check of what to load that needs no data (the engine's `check_config` and so a
    spec's [run] table come through here too)."""
    check_sequence_name(name)
    check_protocol(name, opts.protocol)
    check_scenario(name, opts.scenario, name in SPLIT_SEQUENCES)
    if opts.imdb_labels not in IMDB_LABELS:
        raise UserError(f"unknown IMDB label mapping {opts.imdb_labels!r}; choose one of: "
                        f"{', '.join(IMDB_LABELS)}")
    if not 0 < opts.subsample <= 1:
        raise UserError(f"subsample must be in (0, 1], got {opts.subsample}")
    if opts.num_tasks is not None and opts.num_tasks < 1:
        raise UserError(f"the number of tasks must be at least 1, got {opts.num_tasks}")
    if opts.num_tasks is not None and not name.startswith("permuted-"):
        raise UserError(f"{name!r} has a fixed number of tasks; --tasks is for the permuted "
                        f"sequences ({', '.join(s for s in SEQUENCES if s.startswith('permuted-'))})")
    if opts.num_tasks is not None and opts.num_tasks > MAX_PERMUTED_TASKS:
        raise UserError(f"{opts.num_tasks} tasks would hold {opts.num_tasks} permuted copies of "
                        f"the data in memory; use at most {MAX_PERMUTED_TASKS}")


def task_count(name: str, opts: DataOptions | None = None) -> int:
    """How many tasks the sequence has under these options, without loading its data."""
    opts = opts or DataOptions()
    if name.startswith("permuted-"):
        return opts.num_tasks or (10 if opts.protocol == "vandeven2022" else 5)
    if name in SPLIT_SEQUENCES:
        return len(PAIRS)
    return 2  # the paper's pairs: mnist-fmnist, fpb-imdb


def load_sequence(name: str, opts: DataOptions | None = None) -> TaskSequence:
    opts = opts or DataOptions()
    check_data_options(name, opts)
    sequence = SEQUENCES[name](opts)
    if name in SPLIT_SEQUENCES:  # labels and heads as the scenario has them
        from classp import scenarios

        sequence = scenarios.apply(sequence, opts.scenario or sequence.scenario)
    if opts.subsample < 1:
        sequence.tasks = [subsample_task(t, opts.subsample) for t in sequence.tasks]
        sequence.notes.append(f"subsampled to {opts.subsample:g} of every split")
    return sequence
