"""Adam, one optimizer across all tasks (its moments carry over)."""

import torch

from classp.methods.base import Method
from classp.methods.params import Param


class Adam(Method):
    name = "adam"
    PARAMS = {"lr": Param(0.001, "learning rate", low=0, above=True)}

    def optimizer(self, params):
        return torch.optim.Adam(params, lr=self.params["lr"], foreach=True)
