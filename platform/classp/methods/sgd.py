"""Plain SGD: the forgetting baseline."""

import torch

from classp.methods.base import Method


class SGD(Method):
    name = "sgd"
    defaults = {"lr": 0.01, "momentum": 0.0}

    def optimizer(self, params):
        return torch.optim.SGD(params, lr=self.params["lr"], momentum=self.params["momentum"])
