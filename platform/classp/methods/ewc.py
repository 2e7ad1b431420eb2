"""Elastic Weight Consolidation (Kirkpatrick et al. 2017), the paper's baseline.

At the end of each task the diagonal empirical Fisher F and the weights w* are taken from
the same model (the published script anchored a fresh model to another's weights; we do
not). Later tasks add (lambda / 2) * sum_k sum_i F_k,i (w_i - w*_k,i)^2.

fisher "sample": the mean over samples of each sample's squared gradient of the loss at its
true label (the empirical Fisher); "exact": the expectation over the model's own predicted
distribution, sum_c p(c|x) (d log p(c|x) / dw)^2, averaged over samples (the Fisher
information itself); "predicted": the squared gradient at the label the model predicts,
argmax_c p(c|x) (Hsu et al.'s code); "batch": the mean over mini-batches of the squared
batch-mean gradient (cheaper, and smaller by about the batch size). `fisher_samples` caps
the samples used (the first ones of the task's training set). mode "separate" keeps (F, w*) per task: two floats
per weight per task; "online" (Schwarz et al. 2018) keeps one running F = gamma F + F_new
and the latest w*: two floats per weight. `optimizer` is plain SGD (default) or Adam or
AdaGrad (the reference protocols train EWC with Adam).

variant "textbook" (default) is the above. The author's scripts did something else, and
each is offered by name so that the paper's rows can be rerun as published:

- "published-vision" (experiment_EWC.py): before training, a separate, freshly
  initialised copy of the network is trained one epoch on the shuffled first task (plain
  SGD at the run's lr). During that epoch the squared mini-batch gradients are summed and
  divided by the number of samples (60,000 for MNIST, not the number of batches): that
  is F. Its final weights are w*. The run's own model then trains the sequence as usual,
  and from the first step after its first epoch of the first task on, the loss adds
  lambda * sum F (w - w*)^2 (no 1/2).
- "published-text" (the text script): at the end of the first task, F is the sum of the
  squared mini-batch gradients over that task's batches divided by their count, and w*
  the model's weights; later tasks add lambda * sum F (w - w*)^2 (no 1/2).

Neither published variant evaluates the Fisher in eval mode: the scripts never call
eval(), so dropout is active there too.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn import functional as F

from classp.methods.base import LR, STEPPED_BY, SteppedBy
from classp.methods.params import Param
from classp.methods.per_sample import functional_parts, mean_over_samples

FISHERS = ("sample", "exact", "predicted", "batch")
MODES = ("separate", "online")
VARIANTS = ("textbook", "published-vision", "published-text")


class EWC(SteppedBy):
    name = "ewc"
    PARAMS = {
        "lr": LR,
        "ewc_lambda": Param(100.0, "penalty weight", low=0),
        "fisher": Param("sample", "empirical (sample), exact, predicted-label or batch Fisher",
                        choices=FISHERS),
        "mode": Param("separate", "a penalty per task, or one online", choices=MODES),
        "gamma": Param(1.0, "online: decay of the old Fisher", low=0),
        "fisher_samples": Param(1024, "samples the Fisher is estimated on", low=1),
        "fisher_batch": Param(32, "batch of the Fisher estimate", low=1),
        "variant": Param("textbook", "the textbook's or the author's procedures", choices=VARIANTS),
        "optimizer": STEPPED_BY["optimizer"],
    }

    def __init__(self, **params):
        super().__init__(**params)
        self.anchors: list[tuple[list[torch.Tensor], list[torch.Tensor]]] = []  # (F, w*)
        self.steps_done = 0
        self.penalty_from_step = 1  # published-vision: the first step after epoch 1

    @property
    def published(self) -> bool:
        return self.params["variant"] != "textbook"

    def begin_task(self, task_index, model, optimizer):
        if task_index == 0 and self.params["variant"] == "published-vision":
            first = self.plan.tasks[0]
            anchor = fresh_copy(model)
            self.anchors = [train_anchor(anchor, first, self.params["lr"], self.plan.seed)]
            self.penalty_from_step = first.steps_per_epoch + 1

    def step_done(self):
        self.steps_done += 1

    def _penalty_on(self) -> bool:
        return bool(self.anchors) and self.steps_done + 1 >= self.penalty_from_step

    def step_signature(self):
        # The published variant switches its penalty on after the first epoch, mid-task;
        # anchors change only between tasks, where graphs are dropped anyway.
        return self._penalty_on()

    def penalty(self, model):
        if not self._penalty_on():
            return None
        params = [p for p in model.parameters() if p.requires_grad]
        total = params[0].new_zeros(())
        for fisher, star in self.anchors:
            for w, f, s in zip(params, fisher, star):
                total = total + (f * (w - s).pow(2)).sum()
        # The published scripts have no 1/2.
        return (1.0 if self.published else 0.5) * self.params["ewc_lambda"] * total

    def end_task(self, task_index, model, train_x, train_y):
        if self.params["variant"] == "published-vision":
            return  # anchored once, to the separate model
        if self.params["variant"] == "published-text":
            if task_index == 0:
                batch = self.plan.tasks[0].batch_size
                self.anchors = [(_batch_fisher(model, train_x, train_y, batch),  # train mode, as published
                                 [p.detach().clone() for p in model.parameters() if p.requires_grad])]
            return
        fisher = self.fisher(model, train_x, train_y)
        star = [p.detach().clone() for p in model.parameters() if p.requires_grad]
        if self.params["mode"] == "online" and self.anchors:
            old, _ = self.anchors[0]
            fisher = [self.params["gamma"] * o + f for o, f in zip(old, fisher)]
            self.anchors = [(fisher, star)]
        else:
            self.anchors.append((fisher, star))

    def own_tensors(self):
        return [t for fisher, star in self.anchors for t in (*fisher, *star)]

    # -- the Fisher -----------------------------------------------------------------------
    def fisher(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
        n = min(len(y), int(self.params["fisher_samples"]))
        x, y = x[:n], y[:n]
        was_training = model.training
        model.eval()  # no dropout: the Fisher of the model as it will be evaluated
        try:
            kind = self.params["fisher"]
            if kind == "batch":
                return _batch_fisher(model, x, y, int(self.params["fisher_batch"]))
            if kind == "exact":
                return _exact_fisher(model, x)
            if kind == "predicted":
                with torch.no_grad():
                    y = torch.cat([model(x[i:i + 1024]).argmax(1) for i in range(0, len(x), 1024)])
            return _sample_fisher(model, x, y)
        finally:
            model.train(was_training)


def _batch_fisher(model, x, y, batch):
    params = [p for p in model.parameters() if p.requires_grad]
    total = [torch.zeros_like(p) for p in params]
    batches = 0
    for start in range(0, len(y), batch):
        loss = F.cross_entropy(model(x[start:start + batch]), y[start:start + batch])
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        for t, g in zip(total, grads):
            if g is not None:
                t.add_(g.pow(2))
        batches += 1
    return [t / max(batches, 1) for t in total]


def _sample_fisher(model, x, y, chunk: int = 256):
    """Per-sample squared gradients: closed form for linear layers (classp.methods.
    per_sample), else torch.func (vmap over grad), in chunks."""
    from torch.func import functional_call, grad, vmap

    closed = mean_over_samples(model, x, lambda start, stop: [(
        lambda out: F.cross_entropy(out, y[start:stop], reduction="none"), None)], "square", chunk)
    if closed is not None:
        return closed
    names, params, buffers = functional_parts(model)

    def loss_one(theta, xi, yi):
        out = functional_call(model, (theta, buffers), (xi.unsqueeze(0),))
        return F.cross_entropy(out, yi.unsqueeze(0))

    per_sample = vmap(grad(loss_one), in_dims=(None, 0, 0))
    total = {n: torch.zeros_like(p) for n, p in params.items()}
    for start in range(0, len(y), chunk):
        try:
            grads = per_sample(params, x[start:start + chunk], y[start:start + chunk])
            for n in names:
                total[n].add_(grads[n].pow(2).sum(0))
        except RuntimeError:  # an op without a batching rule: one sample at a time
            for i in range(start, min(start + chunk, len(y))):
                g = grad(loss_one)(params, x[i], y[i])
                for n in names:
                    total[n].add_(g[n].pow(2))
    return [total[n] / max(len(y), 1) for n in names]


def _exact_fisher(model, x, chunk: int = 32, closed_chunk: int = 256):
    """mean over samples of sum_c p(c|x) (d log p(c|x) / dw)^2: per class, the squared
    gradients of the log-probability weighted by the probability; closed form for linear
    layers, else torch.func's per-sample Jacobians (`chunk` samples at a time)."""
    from torch.func import functional_call, jacrev, vmap

    def per_class(start, stop):  # each class's squared gradients, weighted by its probability
        with torch.no_grad():
            probs = F.softmax(model(x[start:stop]), 1)
        return [(lambda out, c=c: F.log_softmax(out, 1)[:, c], probs[:, c])
                for c in range(probs.shape[1])]

    closed = mean_over_samples(model, x, per_class, "square", closed_chunk)
    if closed is not None:
        return closed
    names, params, buffers = functional_parts(model)

    def log_probs(theta, xi):
        out = functional_call(model, (theta, buffers), (xi.unsqueeze(0),))
        return F.log_softmax(out, 1).squeeze(0)  # (classes,)

    per_sample = vmap(jacrev(log_probs), in_dims=(None, 0))  # name -> (N, classes, *shape)
    total = {n: torch.zeros_like(p) for n, p in params.items()}
    for start in range(0, len(x), chunk):
        xs = x[start:start + chunk]
        with torch.no_grad():
            probs = F.softmax(functional_call(model, (params, buffers), (xs,)), 1)
        jac = per_sample(params, xs)
        for n in names:
            weight = probs.reshape(*probs.shape, *([1] * (jac[n].dim() - 2)))
            total[n].add_((weight * jac[n].pow(2)).sum((0, 1)))
    return [total[n] / max(len(x), 1) for n in names]


def fresh_copy(model: nn.Module) -> nn.Module:
    """The same network, freshly initialised (the published script builds a second model)."""
    anchor = copy.deepcopy(model)
    for module in anchor.modules():  # the root too: a bare nn.Linear is a model
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()
    return anchor


def train_anchor(anchor: nn.Module, task, lr: float, seed: int):
    """published-vision: train `anchor` one epoch on the task, shuffled with `seed`, with
    SGD at `lr`; return (F, w*): F = the sum over its batches of the squared batch
    gradient (taken before each step), divided by the number of samples; w* its weights."""
    anchor.train()
    params = [p for p in anchor.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=lr)
    fisher = [torch.zeros_like(p) for p in params]
    n = len(task.train_y)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).to(task.train_y.device)
    for start in range(0, n, task.batch_size):
        index = order[start:start + task.batch_size]
        loss = F.cross_entropy(anchor(task.train_x[index]), task.train_y[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch._foreach_add_(fisher, torch._foreach_mul([p.grad for p in params], [p.grad for p in params]))
        optimizer.step()
    fisher = [f / n for f in fisher]
    return fisher, [p.detach().clone() for p in params]
