"""CLASSP with a phase schedule.

schedule "paper": the paper's preset. The first task trains with the threshold and decay
off; from the second task on, threshold 0 and decay on. schedule "constant": the given
threshold and decay throughout. The accumulator is never reset between tasks.
"""

from classp.errors import UserError
from classp.methods.base import Method
from classp.optim import CLASSP as CLASSPOptimizer
from classp.optim import RULES, validate_hyperparameters

SCHEDULES = ("paper", "constant")


class CLASSP(Method):
    name = "classp"
    defaults = {"lr": 0.2, "threshold": 0.0, "power": 1.0, "eps": 1e-5, "decay": True,
                "rule": "algorithm", "schedule": "constant"}

    def __init__(self, **params):
        super().__init__(**params)
        p = self.params
        if p["schedule"] not in SCHEDULES:
            raise UserError(f"unknown CLASSP schedule {p['schedule']!r}; choose one of: "
                            f"{', '.join(SCHEDULES)}")
        if p["rule"] not in RULES:
            raise UserError(f"unknown CLASSP rule {p['rule']!r}; choose one of: {', '.join(RULES)}")
        try:
            validate_hyperparameters(p["lr"], p["threshold"], p["power"], p["eps"],
                                     bool(p["decay"]), p["rule"])
        except ValueError as exc:
            raise UserError(str(exc)) from None
        self.track_updates = False  # the engine turns it on when a tracker wants sparsity

    def phase(self, task_index: int) -> dict:
        if self.params["schedule"] == "paper":
            first = task_index == 0
            return {"threshold": self.params["threshold"] if first else 0.0, "decay": not first}
        return {"threshold": self.params["threshold"], "decay": bool(self.params["decay"])}

    def optimizer(self, params):
        p = self.params
        # foreach explicitly: our flat multi-tensor path is also the fast one on a CPU.
        return CLASSPOptimizer(params, lr=p["lr"], power=p["power"], eps=p["eps"],
                               rule=p["rule"], foreach=True, track_updates=self.track_updates,
                               **self.phase(0))

    def begin_task(self, task_index, model, optimizer):
        for group in optimizer.param_groups:
            group.update(self.phase(task_index))
