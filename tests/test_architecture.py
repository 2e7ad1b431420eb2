"""docs/ARCHITECTURE.md holds: every file it names exists, and its two recipes (add a
method, add a sequence) work as written: a new class plus one registry entry, then a run
and a study spec that searches it."""

from __future__ import annotations

import re

import torch

from classp.data import SEQUENCES, DataOptions, load_sequence
from classp.data.base import Split, Task, TaskSequence, TrainingProtocol
from classp.engine import RunConfig, run
from classp.methods import METHODS
from classp.methods.base import Method
from classp.models import InputShape
from classp.specs import load_spec
from support import REPO

DOC = REPO / "docs" / "ARCHITECTURE.md"


def test_every_file_the_architecture_names_exists():
    text = DOC.read_text()
    package = REPO / "platform" / "classp"
    folders = [REPO, package, package / "methods", package / "data", package / "dashboards"]
    named = set(re.findall(r"`([\w/]+\.(?:py|toml|md))`", text))
    missing = sorted(n for n in named if not any((f / n).exists() for f in folders))
    assert missing == []
    listed = set(re.findall(r"^\| `([\w/]+\.py)` \|", text, re.M))
    on_disk = {p.relative_to(package).as_posix() for p in
               [*package.glob("*.py"), *package.glob("study/*.py")]} - {"__init__.py", "study/__init__.py"}
    assert on_disk - listed == set(), "modules the architecture does not describe"


class Halving(Method):
    """Step 1: a new method (plain SGD whose lr halves with every task)."""

    name = "halving"
    defaults = {"lr": 0.1}

    def optimizer(self, params):
        return torch.optim.SGD(params, lr=self.params["lr"])

    def begin_task(self, task_index, model, optimizer):
        for group in optimizer.param_groups:
            group["lr"] = self.params["lr"] / 2 ** task_index


def test_adding_a_method_is_one_file_and_one_registry_entry(monkeypatch, tmp_path):
    monkeypatch.setitem(METHODS, Halving.name, Halving)  # step 2
    result = run(RunConfig(sequence="split-digits", method="halving", epochs=1, subsample=0.2))
    assert result.status == "finished"
    spec = tmp_path / "halving.toml"  # step 3
    spec.write_text('[study]\nname = "h"\nsequence = "split-digits"\nmethods = ["halving"]\n'
                    'n_trials = 1\n\n[methods.halving.search]\nlr = { low = 0.01, high = 0.5, log = true }\n')
    assert load_spec(spec).method("halving").search


def _two_tasks(opts: DataOptions) -> TaskSequence:
    """Step 1: a new sequence (two tiny tasks of random 4x4 images)."""
    generator = torch.Generator().manual_seed(0)

    def split(n):
        return Split(torch.randn(n, 1, 4, 4, generator=generator), torch.randint(0, 2, (n,), generator=generator))

    tasks = [Task(f"t{i}", split(16), split(8), split(8)) for i in range(2)]
    return TaskSequence("two-tasks", tasks, InputShape("image", (1, 4, 4), 2),
                        TrainingProtocol(epochs=(1, 1), batch_size=8, model="mlp"))


def test_adding_a_sequence_is_one_loader_and_one_registry_entry(monkeypatch):
    monkeypatch.setitem(SEQUENCES, "two-tasks", _two_tasks)  # step 2
    sequence = load_sequence("two-tasks")
    result = run(RunConfig(sequence="two-tasks", method="sgd"), sequence=sequence)
    assert result.status == "finished" and len(result.accuracy["test"]) == 3
