"""L2: the EWC penalty with the Fisher replaced by ones (Hsu et al. 2018's baseline).

After each task the weights w* are kept; later tasks add (lambda / 2) * sum_i (w_i - w*_i)^2,
anchored to the weights at the end of the latest task (Hsu et al.'s online form: one
anchor, one float per weight). Their code has no 1/2: their coefficient c is our
lambda = 2c.
"""

from __future__ import annotations

import torch

from classp.methods.base import STEPPED_BY, SteppedBy
from classp.methods.params import Param


class L2(SteppedBy):
    name = "l2"
    PARAMS = {**STEPPED_BY, "l2_lambda": Param(1.0, "penalty weight", low=0)}

    def __init__(self, **params):
        super().__init__(**params)
        self.anchor: list[torch.Tensor] = []

    def penalty(self, model):
        if not self.anchor:
            return None
        params = [p for p in model.parameters() if p.requires_grad]
        total = sum((p - a).pow(2).sum() for p, a in zip(params, self.anchor))
        return 0.5 * self.params["l2_lambda"] * total

    def end_task(self, task_index, model, train_x, train_y):
        self.anchor = [p.detach().clone() for p in model.parameters() if p.requires_grad]

    def own_tensors(self):
        return list(self.anchor)
