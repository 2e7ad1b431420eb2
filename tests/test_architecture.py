"""docs/ARCHITECTURE.md holds: every file it names exists, and its two recipes (add a
method, add a sequence) work as written: a new class plus one registry entry, then a run
and a study spec that searches it."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import torch

from classp.data import SEQUENCES, DataOptions, load_sequence
from classp.data.base import Split, Task, TaskSequence, TrainingProtocol
from classp.engine import RunConfig, run
from classp.methods import METHODS
from classp.methods.base import Method
from classp.methods.params import Param
from classp.models import InputShape
from classp.specs import load_spec
from support import REPO, TINY_STUDY

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
    PARAMS = {"lr": Param(0.1, "learning rate, halved with every task", low=0, above=True)}

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


NEW_KNOB = '''    PARAMS = {**STEPPED_BY, "c": Param(0.1, "penalty weight", low=0),
              "omega_decay": Param(1.0, "decay of earlier tasks' importance", low=0, high=1),'''


def test_a_new_method_parameter_is_one_declaration(tmp_path):
    """A knob added to SI in a scratch copy of the package, as one more `Param` line, is
    checked in a spec, on the command line and listed by `classp list`, with its range."""
    package = tmp_path / "platform"
    shutil.copytree(REPO / "platform" / "classp", package / "classp",
                    ignore=shutil.ignore_patterns("__pycache__"))
    si = package / "classp" / "methods" / "si.py"
    declared = '    PARAMS = {**STEPPED_BY, "c": Param(0.1, "penalty weight", low=0),'
    assert si.read_text().count(declared) == 1
    si.write_text(si.read_text().replace(declared, NEW_KNOB))
    env = {**os.environ, "PYTHONPATH": str(package), "CLASSP_HOME": str(tmp_path / "home")}

    def classp(*args):
        return subprocess.run([sys.executable, "-m", "classp.cli", *map(str, args)],
                              capture_output=True, text=True, timeout=300, env=env)

    listed = classp("list")
    assert listed.returncode == 0, listed.stderr
    assert "omega_decay=1.0 (in [0, 1])" in next(line for line in listed.stdout.splitlines()
                                                 if line.strip().startswith("si:"))
    flag = classp("run", "--method", "si", "--omega-decay", "2")
    assert flag.returncode == 2 and flag.stderr.strip() == \
        "classp: error: omega_decay must be in [0, 1], got 2.0"
    assert "--omega-decay" in classp("run", "--help").stdout
    spec = tmp_path / "si.toml"
    spec.write_text(TINY_STUDY.read_text().replace('methods = ["classp", "sgd"]', 'methods = ["si"]')
                    + "\n[methods.si]\nfixed = { omega_decay = -0.5 }\n")
    studied = classp("study", "run", spec)
    assert studied.returncode == 2 and "Traceback" not in studied.stderr, studied.stderr
    assert studied.stderr.strip().endswith("methods.si.fixed: omega_decay must be in [0, 1], got -0.5")
    assert not (tmp_path / "home" / "optuna.journal").exists()  # refused before anything ran
