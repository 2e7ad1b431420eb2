"""Adam, one optimizer across all tasks (its moments carry over)."""

import torch

from classp.methods.base import Method


class Adam(Method):
    name = "adam"
    defaults = {"lr": 0.001}

    def optimizer(self, params):
        return torch.optim.Adam(params, lr=self.params["lr"], foreach=True)
