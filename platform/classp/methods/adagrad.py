"""torch's AdaGrad (eps outside the root; CLASSP with p = 2, threshold 0 puts it inside)."""

import torch

from classp.methods.base import Method


class AdaGrad(Method):
    name = "adagrad"
    defaults = {"lr": 0.01, "eps": 1e-10}

    def optimizer(self, params):
        return torch.optim.Adagrad(params, lr=self.params["lr"], eps=self.params["eps"],
                                   foreach=True)
