"""torch's AdaGrad (eps outside the root; CLASSP with p = 2, threshold 0 puts it inside)."""

import torch

from classp.methods.base import LR, Method
from classp.methods.params import Param


class AdaGrad(Method):
    name = "adagrad"
    PARAMS = {"lr": LR, "eps": Param(1e-10, "added to the denominator", low=0)}

    def optimizer(self, params):
        return torch.optim.Adagrad(params, lr=self.params["lr"], eps=self.params["eps"],
                                   foreach=True)
