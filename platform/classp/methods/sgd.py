"""Plain SGD: the forgetting baseline."""

import torch

from classp.methods.base import LR, Method
from classp.methods.params import Param


class SGD(Method):
    name = "sgd"
    PARAMS = {"lr": LR, "momentum": Param(0.0, "momentum", low=0)}

    def optimizer(self, params):
        return torch.optim.SGD(params, lr=self.params["lr"], momentum=self.params["momentum"])
