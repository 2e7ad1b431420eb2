"""Joint training, the upper bound: at task k the model trains on the union of tasks 1..k
shuffled together, so the last row of the accuracy matrix is all tasks learnt at once
(with a head per task, each sample through its own). Hsu et al.'s "offline" row trains
once on all tasks; this trains the growing union at every task, which ends no worse."""

from classp.methods.base import SteppedBy


class Joint(SteppedBy):
    name = "joint"
    joint = True
    defaults = {"lr": 0.01, "optimizer": "sgd"}
