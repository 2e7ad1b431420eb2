"""What defines a run (`RunConfig`), every check of it, and what it resolves to.

The checks that need no data (`check_config`) run before anything loads; those that need
the data (`check_with_data`) before a study records a trial; `resolved_settings` is what a
run used where the config left it to the sequence's protocol (what tracking logs).
"""

from __future__ import annotations

import math
import types
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Union, get_args, get_origin, get_type_hints

import torch

from classp.data import DataOptions, TaskSequence, check_data_options
from classp.errors import UserError
from classp.methods import build_method
from classp.models import build_model, check_model_name
from classp.stepping import STEP_MODES

SPLITS = ("train", "val", "test")
MIN_POINTS_PER_TASK = 20


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines a run. Flattened to a dict for logging (`flat()`)."""

    sequence: str = "split-digits"
    method: str = "classp"
    method_params: dict[str, Any] = field(default_factory=dict)
    model: str | None = None  # None: the sequence's own model
    epochs: tuple[int, ...] | int | None = None  # per task, or one for all; None: protocol
    batch_size: int | None = None
    shuffle: bool | None = None
    seed: int = 0
    device: str = "auto"
    eval_splits: tuple[str, ...] = ("val", "test")
    eval_train: bool | None = None  # None: as the sequence's protocol says (the paper: yes)
    eval_batch_size: int = 1024
    # At most this many steps per reported point; fewer on a short task, so that every
    # task gives at least MIN_POINTS_PER_TASK points (or one per step).
    log_every: int = 25
    track_updates: bool = False  # per-weight update counts (any method), for sparsity
    progress: bool = False
    data_dir: str | None = None
    download: bool = False
    subsample: float = 1.0
    num_tasks: int | None = None
    protocol: str = "study"  # "paper": what the published scripts did (paper sequences)
    # Train each task in passes until the last batch's loss is below its target (one per
    # task; then `epochs` caps the passes). None: as the protocol says (the published text
    # protocol has targets), else a fixed number of epochs.
    loss_targets: tuple[float, ...] | None = None
    imdb_labels: str = "corrected"  # or "published": IMDB pos -> FPB's neutral
    # Split sequences: "task", "domain" or "class" incremental (classp.scenarios); None:
    # the sequence's own (class for split sequences; the others are domain-incremental).
    scenario: str | None = None
    # "auto": training steps replayed from CUDA graphs on a GPU, eager on a CPU (see
    # classp.stepping); "eager" or "graphed" to choose.
    step_mode: str = "auto"

    def flat(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if k != "method_params"}
        out.update({f"method.{k}": v for k, v in self.method_params.items()})
        return out


# What a trial sets itself; a study spec's [run] table may set every other RunConfig field.
PER_TRIAL_FIELDS = frozenset({"sequence", "method", "method_params", "seed", "eval_splits",
                              "track_updates", "progress"})


def run_settings() -> dict[str, tuple[type, ...]]:
    """The settings a spec's [run] table may give, each with the TOML types it accepts,
    read off RunConfig's fields (so a new field is a new setting, with no list to keep)."""
    hints = get_type_hints(RunConfig)
    out = {}
    for name, hint in hints.items():
        if name in PER_TRIAL_FIELDS:
            continue
        members = get_args(hint) if get_origin(hint) in (Union, types.UnionType) else (hint,)
        accepted: list[type] = []
        for member in members:
            if get_origin(member) is tuple:
                accepted.append(list)  # a TOML array; the spec reader makes it a tuple
            elif member is float:
                accepted += [float, int]
            elif member in (int, str, bool):
                accepted.append(member)
        out[name] = tuple(sorted(dict.fromkeys(accepted), key=lambda t: t is list))
    return out


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown device {name!r}; use auto, cpu or cuda[:N]") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError("device 'cuda' asked for but no CUDA GPU is available; use --device cpu")
    return device


def epochs_per_task(config: RunConfig, sequence: TaskSequence) -> list[int]:
    T = len(sequence.tasks)
    epochs = config.epochs if config.epochs is not None else sequence.protocol.epochs
    if isinstance(epochs, int):
        epochs = (epochs,) * T
    epochs = list(epochs)
    if len(epochs) == 1:
        epochs = epochs * T
    if len(epochs) != T:  # positive integers: check_config
        raise UserError(f"{len(epochs)} epoch counts given for {T} tasks; give one, or one per task")
    return epochs


MAX_SEED = 2**63 - 1  # torch's generators take a 64-bit seed; beyond, they overflow


def check_seed(seed) -> None:
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise UserError(f"a seed must be an integer from 0 to 2**63 - 1, got {seed!r}")


def check_config(config: RunConfig) -> None:
    """Every check of a run's settings that needs no data, so that bad input fails before
    anything loads: the one place they are checked (the command line, a spec's [run] table
    and `run` all come here)."""
    check_data_options(config.sequence, data_options(config))
    check_seed(config.seed)
    if config.model is not None:
        check_model_name(config.model)
    if config.batch_size is not None and (not isinstance(config.batch_size, int) or config.batch_size < 1):
        raise UserError(f"batch size must be a positive integer, got {config.batch_size}")
    if config.epochs is not None:
        values = [config.epochs] if isinstance(config.epochs, int) else list(config.epochs)
        if not values or any((not isinstance(e, int)) or e < 1 for e in values):
            raise UserError(f"epochs must be positive integers, got {config.epochs}")
    if config.loss_targets is not None and (
            not config.loss_targets or any(not isinstance(t, (int, float)) or isinstance(t, bool)
                                           or not 0 < t < math.inf for t in config.loss_targets)):
        raise UserError(f"loss targets must be positive finite numbers, one per task, got "
                        f"{config.loss_targets}")
    if not isinstance(config.eval_batch_size, int) or config.eval_batch_size < 1:
        raise UserError(f"eval_batch_size must be a positive integer, got {config.eval_batch_size}")
    if config.log_every < 1:
        raise UserError(f"log_every must be a positive integer, got {config.log_every}")
    if config.step_mode not in STEP_MODES:
        raise UserError(f"unknown step mode {config.step_mode!r}; choose from {', '.join(STEP_MODES)}")
    for split in config.eval_splits:
        if split not in SPLITS:
            raise UserError(f"unknown split {split!r}; choose from {', '.join(SPLITS)}")


def check_with_data(config: RunConfig, sequence: TaskSequence) -> None:
    """Every check of a run that needs its data (the device, epochs and loss targets per
    task, the model for this input), with nothing trained: a study makes them before it
    records a trial, so that a setting that cannot run fails once, not in every trial."""
    check_config(config)
    build_method(config.method, config.method_params)
    resolve_device(config.device)
    epochs_per_task(config, sequence)
    loss_targets(config, sequence)
    with torch.device("meta"):  # the model's shape checks without its memory
        build_model(config.model or sequence.protocol.model, sequence.input)


def resolved_settings(config: RunConfig, sequence: TaskSequence) -> dict[str, Any]:
    """The run's settings as logged: what the run used where the config left it to the
    protocol (model, batch size, epochs, shuffling, training-set evaluation, number of
    tasks), and nothing that stayed unset."""
    protocol = sequence.protocol
    out = config.flat()
    out.update(model=config.model or protocol.model,
               batch_size=config.batch_size or protocol.batch_size,
               epochs=epochs_per_task(config, sequence),
               shuffle=protocol.shuffle if config.shuffle is None else config.shuffle,
               eval_train=protocol.eval_train if config.eval_train is None else config.eval_train,
               num_tasks=len(sequence.tasks), scenario=sequence.scenario,
               iterations=list(protocol.iterations) if protocol.iterations else None)
    return {k: v for k, v in out.items() if v is not None}


def data_options(config: RunConfig) -> DataOptions:
    """Where and how a run's data is loaded."""
    return DataOptions(data_dir=Path(config.data_dir) if config.data_dir else None,
                       download=config.download, subsample=config.subsample,
                       num_tasks=config.num_tasks, protocol=config.protocol,
                       imdb_labels=config.imdb_labels, scenario=config.scenario)


def loss_targets(config: RunConfig, sequence: TaskSequence) -> tuple[float, ...] | None:
    """Per task, the training loss that ends the task (None: train a fixed number of epochs)."""
    if config.loss_targets is not None:
        targets = tuple(config.loss_targets)
    elif sequence.protocol.loss_targets is not None:
        by_method = sequence.protocol.loss_targets
        if config.method not in by_method:
            raise UserError(f"the {sequence.protocol.name} protocol of {sequence.name} has loss "
                            f"targets for {', '.join(by_method)} only; give --loss-targets for "
                            f"{config.method!r}")
        targets = by_method[config.method]
    else:
        return None
    if len(targets) == 1:
        targets = targets * len(sequence.tasks)
    if len(targets) != len(sequence.tasks):
        raise UserError(f"{len(targets)} loss targets given for {len(sequence.tasks)} tasks; give "
                        f"one, or one per task")
    return targets
