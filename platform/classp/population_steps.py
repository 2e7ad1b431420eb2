"""A population's parameters as one [K, N] buffer, and its optimizer steps taken together.

Stepping each member's own optimizer costs a few dozen small operations per member: on a
GPU that is K times the kernel launches of one run, and on a CPU it was a quarter to a half
of a population's step (CLASSP, Adam) at K = 64. So the members' weights live in one
buffer W of shape [K, N] (member k's N weights in row k, each parameter a view), their
gradients in one buffer G of the same shape (the autograd engine accumulates both the
batched data term and each member's own penalty into it, in place), and the members whose
optimizers allow it step as one: a few operations over rows of W and G, with each
member's hyperparameters as a column [n, 1] broadcast over its row. The arithmetic is the
optimizer's own, operation for operation (torch's foreach Adam and AdaGrad, plain SGD,
CLASSP's flat path), so a member still equals its run alone within float tolerance.

Each member's optimizer keeps its settings (a method's schedule edits them between and
within tasks; they are read at every step) and its state, as views of the stacked state:
whatever reads a member's state (its memory, its update counts, a checkpoint) reads what
its run alone would hold. A member whose optimizer has no stacked rule (SGD with momentum,
CLASSP's equation (1) rule, powers other than 1 and 2, its fused path) steps alone, as
before, and so does one that has once stepped alone.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from classp.optim_flat import Workspace
from classp.population_rules import CLASSPRule, Rule, rule_for, single_group

# A stacked parameter is a strided view of W, so autograd would rather its gradient were a
# contiguous tensor of its own and says so; accumulating into the view of G is the point
# (no copies). `quiet_layout_hint` silences that one hint around a population's backward.
_LAYOUT_HINT = "grad and param do not obey the gradient layout contract"


@contextmanager
def quiet_layout_hint():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_LAYOUT_HINT)
        yield

# --------------------------------------------------------------------------------------
# The stacked buffers
# --------------------------------------------------------------------------------------


class FlatStack:
    """W and G of shape [K, N], and per parameter name a leaf of shape [K, ...] that is a
    view of W (its .grad a view of G); each member's parameters become views of its row."""

    def __init__(self, named_params: Sequence[list[tuple[str, nn.Parameter]]]):
        first = named_params[0]
        self.names = [name for name, _ in first]
        self.shapes = [p.shape for _, p in first]
        # Each parameter keeps its memory layout (a CNN's are channels-last): a member's
        # model computes as its run alone does, kernel for kernel.
        self.orders = [_memory_order(p) for _, p in first]
        sizes = [p.numel() for _, p in first]
        self.offsets = [sum(sizes[:i]) for i in range(len(sizes))]
        K, N = len(named_params), sum(sizes)
        like = first[0][1]
        self.W = torch.empty(K, N, dtype=like.dtype, device=like.device)
        self.G = torch.zeros_like(self.W)
        self.leaves: dict[str, Tensor] = {}
        for i, name in enumerate(self.names):
            leaf = self._shaped(self.W, i)
            for k, member in enumerate(named_params):
                leaf[k].copy_(dict(member)[name].detach())
            leaf.requires_grad_()
            leaf.grad = self._shaped(self.G, i)
            self.leaves[name] = leaf
        self.member_params = [[p for _, p in member] for member in named_params]
        self.attach()

    def _shaped(self, buffer: Tensor, i: int) -> Tensor:
        """Parameter i of every member, [K, *shape], a view of `buffer` in its layout."""
        shape, order, offset = self.shapes[i], self.orders[i], self.offsets[i]
        block = buffer[:, offset:offset + math.prod(shape)]
        stored = block.view(buffer.shape[0], *(shape[d] for d in order))
        return stored.permute(0, *(1 + order.index(d) for d in range(len(shape))))

    def rows(self, k: int, buffer: Tensor) -> list[Tensor]:
        """Row k of a [K, N] buffer, as views shaped (and laid out) like the parameters."""
        return [self._shaped(buffer, i)[k] for i in range(len(self.names))]

    def attach(self, idle: set[str] = frozenset()) -> None:
        """Each member's parameters as views of its row of W, their gradients of G (again
        after a method's work between tasks may have replaced a gradient); the gradients
        of the `idle` parameters (another task's head) None, as in a run alone, so that an
        optimizer stepping alone skips them."""
        for k, params in enumerate(self.member_params):
            for name, p, weight, grad in zip(self.names, params, self.rows(k, self.W),
                                             self.rows(k, self.G)):
                if p.data.data_ptr() != weight.data_ptr():
                    p.data = weight
                if name in idle:
                    p.grad = None
                elif p.grad is None or p.grad.data_ptr() != grad.data_ptr():
                    p.grad = grad

    def zero_grad(self) -> None:
        self.G.zero_()


def _memory_order(p: Tensor) -> tuple[int, ...]:
    """The order in which p's dimensions lie in memory, outermost first."""
    if p.dim() == 4 and not p.is_contiguous() and p.is_contiguous(memory_format=torch.channels_last):
        return (0, 2, 3, 1)
    return tuple(range(p.dim()))


# --------------------------------------------------------------------------------------
# The population's steps
# --------------------------------------------------------------------------------------


class StackedSteps:
    """Steps the members' optimizers: those of one stacked rule and key together, the
    others one by one. Reads every member's settings at every step (a schedule may edit
    them) and regroups when they change."""

    def __init__(self, stack: FlatStack, optimizers: list[torch.optim.Optimizer]):
        self.stack, self.optimizers = stack, optimizers
        self.state: dict[str, dict[str, Tensor]] = {}  # rule kind -> stacked state [K, N]
        self.steps: dict[tuple, int] = {}  # key -> steps its members have taken together
        self.step_tensors: dict[tuple, Tensor] = {}  # the same, as the members' state holds it
        self.installed: set[int] = set()  # members whose optimizer state is our views
        self.alone: set[int] = set()  # members stepping alone, for good
        self.eps_in_sum: dict[int, float] = {}  # CLASSP: the eps each accumulator holds
        self.layouts: dict[int, dict[tuple, int]] = {}  # CLASSP: see `_note_layouts`
        self._signature = None
        self._plan: list[tuple[Rule | None, tuple | None, list[int]]] = []

    def regroup(self) -> None:
        """Group the members anew at the next step (their gradients changed: a new task)."""
        self._signature = None

    @torch.no_grad()
    def step(self, active: list[int], after_each: Callable[[int], None]) -> None:
        """One step of every active member; `after_each(k)` once member k has stepped."""
        self._replan(active)
        for rule, key, rows in self._plan:
            if rule is None:
                for k in rows:
                    self.optimizers[k].step()
            else:
                self._step_together(rule, key, rows)
        for k in active:
            after_each(k)

    def scratch_bytes(self, k: int) -> int:
        """The scratch a CLASSP member's run alone keeps resident (the flat path's two
        floats per weight) and that the stacked rule uses per member: counted in its
        state bytes as alone (`Method.state_bytes`), so that the memory reported for a
        run does not depend on how it was trained."""
        size = self.stack.W.element_size()
        return sum(2 * numel * size for numel in self.layouts.get(k, {}).values())

    def _note_layouts(self, rows: list[int]) -> None:
        """Per CLASSP member, the scratch its run alone's flat path would now hold: a pair of
        buffers for each set of parameters with gradients it has stepped (a task's head),
        the newest four (classp.optim_flat.Workspace)."""
        for k in rows:
            group = single_group(self.optimizers[k])
            with_grads = [p for p in group["params"] if p.grad is not None]
            layouts = self.layouts.setdefault(k, {})
            key = tuple(map(id, with_grads))
            if key not in layouts:
                if len(layouts) >= Workspace._MAX_LAYOUTS:
                    layouts.pop(next(iter(layouts)))
                layouts[key] = sum(p.numel() for p in with_grads)

    def _replan(self, active: list[int]) -> None:
        signature = tuple((k, tuple((name, value) for group in self.optimizers[k].param_groups
                                    for name, value in group.items() if name != "params"))
                          for k in active)
        if signature == self._signature:
            return
        self._signature = signature
        groups: dict[tuple, tuple[Rule | None, list[int]]] = {}
        for k in active:
            rule, key = (None, None) if k in self.alone else rule_for(self.optimizers[k])
            if rule is None and k not in self.alone:
                self._go_alone(k)
            groups.setdefault(("alone",) if rule is None else key, (rule, []))[1].append(k)
        self._plan = [(rule, key, rows) for key, (rule, rows) in groups.items()]
        for rule, _, rows in self._plan:
            if isinstance(rule, CLASSPRule):
                self._note_layouts(rows)

    def _go_alone(self, k: int) -> None:
        """Member k steps alone from now on: its optimizer's own state (per parameter, as it
        made it or as views of the stack) is what counts, with a step count per parameter
        (one parameter may then step while another waits, which a stacked rule cannot
        follow), so it never rejoins a stacked rule."""
        self.alone.add(k)
        for state in self.optimizers[k].state.values():
            if "step" in state:
                state["step"] = state["step"].clone()

    def _step_together(self, rule: Rule, key: tuple, rows: list[int]) -> None:
        stack = self.stack
        steps = self.steps[key] = self.steps.get(key, 0) + 1
        groups = [single_group(self.optimizers[k]) for k in rows]
        columns = torch.tensor([rule.columns(g, steps) for g in groups], dtype=stack.W.dtype,
                               device=stack.W.device)
        state = self._state_for(rule, key, rows, groups)
        everyone = rows == list(range(len(self.optimizers)))
        index = None if everyone else torch.tensor(rows, device=stack.W.device)
        W = stack.W if everyone else stack.W.index_select(0, index)
        G = stack.G if everyone else stack.G.index_select(0, index)
        picked = state if everyone else {name: t.index_select(0, index) for name, t in state.items()}
        if isinstance(rule, CLASSPRule):
            self._shift_eps(rows, groups, picked["eps_plus_sum"])
        per_chunk = _rows_per_chunk(W)
        for a in range(0, len(rows), per_chunk):
            b = a + per_chunk
            rule.step(W[a:b], G[a:b], {name: t[a:b] for name, t in picked.items()},
                      columns[a:b], key, steps, groups[a:b])
        if key in self.step_tensors:
            self.step_tensors[key].add_(1)
        if not everyone:
            stack.W.index_copy_(0, index, W)
            for name, t in state.items():
                t.index_copy_(0, index, picked[name])

    def _state_for(self, rule: Rule, key: tuple, rows: list[int], groups) -> dict[str, Tensor]:
        """The stacked state of the rule's kind (one for every key of a rule: a member whose
        CLASSP schedule turns decay on keeps its accumulator), made at first use; each
        member's optimizer state becomes views of its row, as its run alone would hold it."""
        kind = key[0]
        if kind not in self.state:
            self.state[kind] = rule.init_state(self.stack.W, key, groups[0])
        state = self.state[kind]
        for k, group in zip(rows, groups):
            if k in self.installed or not state:
                continue
            self.installed.add(k)
            optimizer = self.optimizers[k]
            views = {name: self.stack.rows(k, t) for name, t in state.items()}
            if kind == "classp":
                state["eps_plus_sum"][k].fill_(group["eps"])
                self.eps_in_sum[k] = group["eps"]
            else:
                step = self.step_tensors.setdefault(key, torch.zeros((), dtype=torch.float32))
            for i, p in enumerate(group["params"]):
                entry = optimizer.state[p]
                entry.clear()
                if kind == "classp":
                    entry["eps_in_sum"] = group["eps"]
                else:
                    entry["step"] = step
                for name in state:
                    entry[name] = views[name][i]
        return state

    def _shift_eps(self, rows: list[int], groups, sums: Tensor) -> None:
        """An eps edited between steps shifts the member's accumulator once (as CLASSP
        does), and its state records the new eps."""
        for i, (k, group) in enumerate(zip(rows, groups)):
            if self.eps_in_sum[k] != group["eps"]:
                sums[i].add_(group["eps"] - self.eps_in_sum[k])
                self.eps_in_sum[k] = group["eps"]
                for p in group["params"]:
                    self.optimizers[k].state[p]["eps_in_sum"] = group["eps"]


# On a CPU a rule's passes over [K, N] rows are faster a few rows at a time: the rows and
# the rule's temporaries then stay in the core's cache between passes, as one run's do
# (benchmarks/population.py). A GPU takes all rows at once.
CPU_CHUNK_FLOATS = 2 ** 18  # 1 MiB of float32


def _rows_per_chunk(W: Tensor) -> int:
    if W.device.type != "cpu":
        return max(len(W), 1)
    return max(1, CPU_CHUNK_FLOATS // max(W.shape[1], 1))


class StackedUpdateCounts:
    """Per-weight update counts (sparsity.UpdateCounter) of the members whose optimizer
    does not count them itself, as [K, N] buffers: each member's counter reads its row
    (views), and one pass over W after each step counts for all, as each counter would."""

    def __init__(self, stack: FlatStack, counters: list):
        self.stack = stack
        self.rows = {k for k, c in enumerate(counters) if c is not None and not c.native}
        if not self.rows:
            return
        self.counts = torch.zeros_like(stack.W, dtype=torch.float32)
        self.previous = stack.W.detach().clone()
        for k in self.rows:
            counters[k]._counts = self.stack.rows(k, self.counts)

    def counts_for(self, k: int) -> bool:
        return k in self.rows

    @torch.no_grad()
    def after_step(self, active: list[int]) -> None:
        """Count, for the active members counted here, the weights this step moved."""
        rows = [k for k in active if k in self.rows]
        if not rows:
            return
        if len(rows) == len(self.stack.W):
            ranges = [(a, a + _rows_per_chunk(self.stack.W))
                      for a in range(0, len(rows), _rows_per_chunk(self.stack.W))]
        else:  # some have left: only the rows still training
            ranges = [(k, k + 1) for k in rows]
        for a, b in ranges:
            current, previous = self.stack.W[a:b], self.previous[a:b]
            self.counts[a:b].add_(torch.sub(current, previous).abs_().sign_())
            previous.copy_(current)
