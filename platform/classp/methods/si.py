"""Synaptic Intelligence (Zenke, Poole and Ganguli 2017).

During a task each weight's contribution to the decrease of the task's loss is
integrated along the trajectory, W += -g * (w_new - w_old) after every step, where g is the
gradient of the task loss alone, without the penalty (as Zenke et al.'s and Hsu et al.'s
codes take it: the penalty's own pull back to the anchor is not a contribution to the
task). At the task's end the importance grows by omega += W / ((w_end - w_start)^2 + xi);
later tasks add c * sum_i omega_i (w_i - w_start_i)^2 with w_start the weights at the last
task's end. `optimizer` is plain SGD (default) or Adam or AdaGrad (the reference protocols
train SI with Adam).

The damping xi defaults to 0.1, as in Hsu et al.'s and van de Ven et al.'s codes. With
Zenke et al.'s 1e-3, a weight that barely moved during a task gets an importance up to
W / 1e-3; with plain SGD the penalty's curvature 2 c omega then exceeds 2 / lr for all but
tiny c, and the run diverges (the quick start's SI study lost 8 of 10 trials that way and
its best sat at chance).
"""

from __future__ import annotations

import torch

from classp.methods.base import STEPPED_BY, SteppedBy
from classp.methods.params import Param


class SI(SteppedBy):
    name = "si"
    PARAMS = {**STEPPED_BY, "c": Param(0.1, "penalty weight", low=0),
              "xi": Param(0.1, "damping of the importance", low=0, above=True)}

    def __init__(self, **params):
        super().__init__(**params)
        self.omega: list[torch.Tensor] = []
        self.anchor: list[torch.Tensor] = []  # weights at the start of the current task
        self.path: list[torch.Tensor] = []  # W, the running path integral
        self.previous: list[torch.Tensor] = []  # weights before the last step
        self.tasks_done = 0


    @staticmethod
    def _params(model):
        return [p for p in model.parameters() if p.requires_grad]

    def begin_task(self, task_index, model, optimizer):
        params = self._params(model)
        if not self.omega:
            self.omega = [torch.zeros_like(p) for p in params]
        self.anchor = [p.detach().clone() for p in params]
        self.previous = [p.detach().clone() for p in params]
        self.path = [torch.zeros_like(p) for p in params]

    def penalty(self, model):
        if self.tasks_done == 0:  # omega is still all zeros
            return None
        total = sum((o * (p - a).pow(2)).sum()
                    for o, p, a in zip(self.omega, self._params(model), self.anchor))
        return self.params["c"] * total

    @torch.no_grad()
    def after_step(self, model):
        params = self._params(model)
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        if self.tasks_done:
            # The task loss's gradient: the penalty's, 2 c omega (w_before - w_start), taken
            # off the total (exact, and no second backward pass).
            pull = torch._foreach_sub(self.previous, self.anchor)
            torch._foreach_mul_(pull, self.omega)
            grads = torch._foreach_add(grads, pull, alpha=-2.0 * self.params["c"])
        delta = torch._foreach_sub([p.detach() for p in params], self.previous)
        torch._foreach_addcmul_(self.path, grads, delta, value=-1.0)  # W += -g * dw
        torch._foreach_copy_(self.previous, [p.detach() for p in params])

    @torch.no_grad()
    def end_task(self, task_index, model, train_x, train_y):
        for o, w, p, a in zip(self.omega, self.path, self._params(model), self.anchor):
            o.add_(w / ((p.detach() - a).pow(2) + self.params["xi"]))
        self.anchor = [p.detach().clone() for p in self._params(model)]
        self.tasks_done += 1

    def own_tensors(self):
        return [*self.omega, *self.anchor, *self.path, *self.previous]
