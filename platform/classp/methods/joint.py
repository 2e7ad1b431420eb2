"""Joint training, the upper bound: at task k the model trains on the union of tasks 1..k
shuffled together, so the last row of the accuracy matrix is all tasks learnt at once."""

import torch

from classp.methods.base import Method


class Joint(Method):
    name = "joint"
    joint = True
    defaults = {"lr": 0.01}

    def optimizer(self, params):
        return torch.optim.SGD(params, lr=self.params["lr"])
