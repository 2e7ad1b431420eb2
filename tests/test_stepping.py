"""Graphed training steps give the weights eager steps give.

On a CPU the graphed path runs its static buffers and per-signature bookkeeping without a
capture (there is no CUDA graph to capture), so the comparison is exact. The same test runs
with real CUDA-graph capture where a GPU is present; CI has none, so there it is skipped with
that reason (run `pytest tests/test_stepping.py` on a GPU machine for the captured path).
"""

from __future__ import annotations

import copy

import pytest
import torch

from classp.data import DataOptions, load_sequence
from classp.engine import RunConfig, run
from classp.errors import UserError

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="CUDA-graph capture needs a CUDA GPU; none here"))]

# Each method's step changes on the host mid-task in its own way: CLASSP's published
# schedule switches phase at step 25 of 28, published EWC switches its penalty on after the
# first epoch, SI's penalty starts with the second task, Adam keeps a step count.
METHODS = {
    "classp-published": ("classp", {"lr": 0.05, "threshold": 1e-4, "schedule": "published",
                                    "rule": "reference-code"}),
    "classp-algorithm": ("classp", {"lr": 0.05, "threshold": 1e-4, "power": 2.0}),
    "ewc-published": ("ewc", {"lr": 0.05, "ewc_lambda": 10.0, "variant": "published-vision"}),
    "ewc-textbook": ("ewc", {"lr": 0.05, "ewc_lambda": 10.0}),
    "si": ("si", {"lr": 0.05, "c": 0.1}),
    "adam": ("adam", {"lr": 1e-3}),
    "adagrad": ("adagrad", {"lr": 0.01}),
    "sgd-momentum": ("sgd", {"lr": 0.05, "momentum": 0.9}),
}


class LastWeights:
    """Keeps a copy of the model's weights at the end of every task."""

    def __init__(self):
        self.weights = []

    def on_run_start(self, *args): ...
    def on_step(self, event): ...
    def on_run_end(self, result): ...

    def on_task_end(self, event):
        self.weights.append({k: v.detach().cpu().clone() for k, v in event.model.state_dict().items()})


@pytest.fixture(scope="module")
def paper_sequence(vision_data_dir):
    # 200 images per task: 7 batches of 32, the last one partial (run eagerly).
    return load_sequence("mnist-fmnist", DataOptions(data_dir=vision_data_dir, protocol="paper"))


def _run(sequence, method, params, mode, device):
    weights = LastWeights()
    result = run(RunConfig(sequence="mnist-fmnist", method=method, method_params=params,
                           protocol="paper", step_mode=mode, device=device, seed=1,
                           track_updates=True, eval_splits=("test",)),
                 [weights], sequence=copy.deepcopy(sequence))
    return result, weights.weights


@pytest.fixture
def deterministic_cudnn(monkeypatch):
    """cuDNN's fastest convolution kernels add in a varying order, so two eager runs on a
    GPU already differ in the last bits; compare with its deterministic kernels."""
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", list(METHODS))
def test_graphed_steps_give_the_weights_of_eager_steps(paper_sequence, name, device,
                                                        deterministic_cudnn):
    method, params = METHODS[name]
    eager, eager_weights = _run(paper_sequence, method, params, "eager", device)
    graphed, graphed_weights = _run(paper_sequence, method, params, "graphed", device)
    assert eager.step_mode == "eager" and graphed.step_mode == "graphed"
    assert graphed.step_counts["replayed"] > graphed.step_counts["eager"] > 0
    assert graphed.steps == eager.steps == 4 * 7 + 7
    for task, (a, b) in enumerate(zip(eager_weights, graphed_weights)):
        for key in a:
            if device == "cpu":  # the same kernels on the same buffers: bit for bit
                assert torch.equal(a[key], b[key]), (name, task, key)
            else:  # float tolerance: captured Adam computes its bias correction on the
                # device (capturable), eager Adam on the host, in another order
                torch.testing.assert_close(a[key], b[key], rtol=1e-3, atol=1e-4)
    if device == "cpu":
        assert eager.accuracy == graphed.accuracy
    else:  # every method's step was captured, none fell back to eager steps
        assert not any("capture failed" in n for n in graphed.notes), graphed.notes


def test_a_phase_switch_or_a_penalty_switched_on_gets_a_graph_of_its_own(paper_sequence):
    # CLASSP published: phase one, phase two from step 25 (task 1), phase two again after the
    # task boundary dropped the graphs (task 2): three graphs.
    result, _ = _run(paper_sequence, *METHODS["classp-published"], "graphed", "cpu")
    assert result.step_counts["graphs"] == 3
    # Plain SGD has one signature per task.
    result, _ = _run(paper_sequence, "sgd", {"lr": 0.05}, "graphed", "cpu")
    assert result.step_counts["graphs"] == 2


def test_a_non_finite_loss_is_caught_at_its_step_when_graphed(paper_sequence):
    broken = copy.deepcopy(paper_sequence)
    broken.tasks[0].train.x[32 * 5, 0, 0, 0] = float("nan")  # batch 6, replayed from a graph
    result = run(RunConfig(sequence="mnist-fmnist", method="sgd", protocol="paper",
                           step_mode="graphed", eval_splits=("test",)), sequence=broken)
    assert result.status == "diverged"
    assert result.diverged_at == {"step": 6, "task": 0}


def test_an_unknown_step_mode_is_refused_before_anything_loads():
    with pytest.raises(UserError, match="unknown step mode 'fast'; choose from auto, eager, graphed"):
        run(RunConfig(step_mode="fast"))
