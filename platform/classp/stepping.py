"""Training steps, run eagerly or replayed from a CUDA graph.

A step is the same code either way (`StepBody`): forward, loss plus the method's penalty,
backward, the optimizer's step, the method's after-step tensor work, the update counter
and the running sums the engine reports every `log_every` steps. On a GPU the paper's CNN
at batch 32 is launch-bound: the GPU waits for Python to launch some hundred small
kernels per eager step, and a graph replays them in one launch (docs/gpu.md has the
measured figures).

`GraphedSteps` captures the body once per *signature* (the batch's length, the optimizer's
settings, the method's `step_signature()`) and replays it: a phase switch (CLASSP's
published schedule) or a penalty switched on (EWC) changes the signature and gets a graph
of its own. A new signature first runs `warmup` steps eagerly (lazy optimizer state,
cuDNN's choice of kernels), and the last partial batch of an epoch, which would need a
graph used once, always runs eagerly. Graphs are dropped at every task boundary, since
methods replace tensors there (EWC's anchors, SI's integrals) that a graph would still
read from their old addresses.

On a CPU there is nothing to capture: `GraphedSteps(capture=False)` runs the same static
buffers and signature bookkeeping and calls the body where CUDA would replay the graph, so
the tests on a CPU check everything but the capture itself (see tests/test_stepping.py,
whose CUDA test runs where a GPU is present).
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

import torch
from torch import Tensor
from torch.nn import functional as F

from classp.errors import first_line

STEP_MODES = ("auto", "eager", "graphed")


class RunningSums:
    """Sums over the steps since the last report, kept on the device and updated in place
    (a graph writes to fixed addresses): loss, correct predictions, the global step and
    the first step whose total loss was not finite (-1: none yet)."""

    def __init__(self, device):
        self.loss = torch.zeros((), device=device)
        self.correct = torch.zeros((), device=device)
        self.step = torch.zeros((), dtype=torch.long, device=device)
        self.first_bad_step = torch.full((), -1, dtype=torch.long, device=device)

    def add(self, loss: Tensor, total: Tensor, logits: Tensor, y: Tensor) -> None:
        self.step.add_(1)
        bad = ~torch.isfinite(total.detach())
        self.first_bad_step.copy_(torch.where(bad & (self.first_bad_step < 0), self.step,
                                              self.first_bad_step))
        self.loss.add_(loss.detach())
        self.correct.add_((logits.detach().argmax(1) == y).sum())

    def read_and_reset(self) -> tuple[float, float, int]:
        """(loss sum, correct, first bad step or -1): one host read."""
        values = torch.stack([self.loss, self.correct.to(self.loss.dtype),
                              self.first_bad_step.to(self.loss.dtype)])
        loss_sum, correct, bad = values.tolist()
        self.loss.zero_()
        self.correct.zero_()
        return loss_sum, correct, int(bad)


class StepBody:
    """One training step on a batch, gradients already cleared. Returns the task loss."""

    def __init__(self, model, method, optimizer, updates, sums: RunningSums):
        self.model, self.method, self.optimizer = model, method, optimizer
        self.updates, self.sums = updates, sums

    def __call__(self, x: Tensor, y: Tensor) -> Tensor:
        logits = self.model(x)
        loss = F.cross_entropy(logits, y)
        penalty = self.method.penalty(self.model)
        total = loss if penalty is None else loss + penalty
        total.backward()
        self.optimizer.step()
        self.method.after_step(self.model)
        if self.updates is not None:
            self.updates.after_step()
        self.sums.add(loss, total, logits, y)
        # Detached, so that no autograd graph outlives its step (a kept one makes the next
        # capture's gradient accumulation wait on another stream).
        return loss.detach()


class EagerSteps:
    """Every step launched from Python, kernel by kernel."""

    mode = "eager"

    def __init__(self, body: StepBody):
        self.body = body
        self.notes: list[str] = []

    def step(self, x: Tensor, y: Tensor) -> Tensor:
        self.body.optimizer.zero_grad(set_to_none=True)
        return self.body(x, y)

    def reset(self) -> None:
        """A task boundary: nothing is kept between steps."""

    def stats(self) -> dict[str, int]:
        return {}


class GraphedSteps:
    """Steps replayed from CUDA graphs, one per signature (see the module's docstring)."""

    mode = "graphed"

    def __init__(self, body: StepBody, batch_size: int, *, capture: bool, warmup: int = 2):
        self.body, self.batch_size, self.capture, self.warmup = body, batch_size, capture, warmup
        self.notes: list[str] = []
        self._graphs: dict[Hashable, tuple[Any, Tensor, Tensor, Tensor]] = {}
        self._seen: dict[Hashable, int] = {}
        self._failed = False
        self.counts = {"replayed": 0, "eager": 0, "graphs": 0}

    def signature(self, batch_length: int) -> Hashable:
        return batch_length, _settings(self.body.optimizer), self.body.method.step_signature()

    def step(self, x: Tensor, y: Tensor) -> Tensor:
        if self._failed or len(x) != self.batch_size:
            return self._eager(x, y)  # a partial batch: a graph would be used once
        key = self.signature(len(x))
        entry = self._graphs.get(key)
        if entry is None:
            seen = self._seen.get(key, 0)
            if seen < self.warmup:
                self._seen[key] = seen + 1
                return self._eager(x, y, side_stream=self.capture)
            entry = self._record(key, x, y)
            if entry is None:
                return self._eager(x, y)
        graph, static_x, static_y, static_loss = entry
        static_x.copy_(x)
        static_y.copy_(y)
        if graph is None:  # no CUDA: the body on the static buffers, where CUDA would replay
            self.body.optimizer.zero_grad(set_to_none=True)
            loss = self.body(static_x, static_y)
        else:
            graph.replay()
            loss = static_loss
        self.counts["replayed"] += 1
        return loss

    def reset(self) -> None:
        self._graphs.clear()
        self._seen.clear()

    def stats(self) -> dict[str, int]:
        return dict(self.counts)

    # -- internals ------------------------------------------------------------------------
    def _eager(self, x, y, side_stream: bool = False) -> Tensor:
        self.counts["eager"] += 1
        self.body.optimizer.zero_grad(set_to_none=True)
        if not side_stream:
            return self.body(x, y)
        # Warm-up before a capture runs on a side stream, as torch's CUDA-graph notes ask.
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            loss = self.body(x, y)
        torch.cuda.current_stream().wait_stream(stream)
        return loss

    def _record(self, key, x, y):
        """Static buffers for this signature and, on CUDA, the captured step (not yet run)."""
        static_x, static_y = torch.empty_like(x), torch.empty_like(y)
        if not self.capture:
            self.counts["graphs"] += 1
            self._graphs[key] = (None, static_x, static_y, None)
            return self._graphs[key]
        static_x.copy_(x)
        static_y.copy_(y)
        self.body.optimizer.zero_grad(set_to_none=True)  # the graph allocates its own grads
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph):
                static_loss = self.body(static_x, static_y)
        except RuntimeError as exc:
            # An optimizer or method that cannot be captured: say so once, run eagerly.
            self._failed = True
            reason = first_line(exc)
            self.notes.append(f"CUDA graph capture failed ({type(self.body.optimizer).__name__}: "
                              f"{reason}); steps ran eagerly")
            torch.cuda.synchronize()
            return None
        self.counts["graphs"] += 1
        self._graphs[key] = (graph, static_x, static_y, static_loss)
        return self._graphs[key]


def build_steps(mode: str, body: StepBody, device: torch.device, batch_size: int):
    """`auto`: graphed on CUDA, eager elsewhere. `graphed` on a CPU runs the CPU-compatible
    path (static buffers, no capture). The mode was checked with the run's config."""
    if device.type == "cuda":
        # On a GPU eager runs too keep Adam's step count on the device, so that eager and
        # graphed runs do the same arithmetic (capturable Adam orders its bias correction
        # differently from the host-side one).
        _make_capturable(body.optimizer)
    if mode == "eager" or (mode == "auto" and device.type != "cuda"):
        return EagerSteps(body)
    return GraphedSteps(body, batch_size, capture=device.type == "cuda")


def _settings(optimizer) -> tuple:
    """The optimizer's per-group settings that a captured step bakes in (lr, CLASSP's
    threshold and decay, ...): everything but the parameters, where hashable."""
    out = []
    for group in optimizer.param_groups:
        items = []
        for k, v in group.items():
            if k == "params":
                continue
            try:
                hash(v)
            except TypeError:
                continue
            items.append((k, v))
        out.append(tuple(sorted(items, key=lambda kv: kv[0])))
    return tuple(out)


def _make_capturable(optimizer) -> None:
    """torch's Adam family keeps its step count on the host unless `capturable`; set it
    before the first step so that the count lives on the device."""
    for group in optimizer.param_groups:
        if "capturable" in group and not optimizer.state:
            group["capturable"] = True
