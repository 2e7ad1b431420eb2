"""CLASSP with a phase schedule.

The paper trains its first task with a threshold and the decay off, then switches to
threshold 0 with the decay on. Three schedules say when:

- "paper": at the task boundary (the first step of the second task);
- "published": at the step the published script switches, counting steps from 1 across
  tasks: phase one while `step < epochs_1 * n_1 / batch` (7,500 for 4 epochs of 60,000
  MNIST images in batches of 32, so the last MNIST batch already runs in phase two; with
  a subsample the switch follows n_1);
- "constant": the given threshold and decay throughout.

The accumulator is never reset between tasks.
"""

from classp.methods.base import Method
from classp.methods.params import Param
from classp.optim import CLASSP as CLASSPOptimizer
from classp.optim import RULES

SCHEDULES = ("paper", "published", "constant")


class CLASSPMethod(Method):
    name = "classp"
    PARAMS = {
        "lr": Param(0.2, "learning rate", low=0, above=True),
        "threshold": Param(0.0, "squared-gradient threshold below which a weight is left alone",
                           low=0),
        "power": Param(1.0, "the exponent p", low=0, above=True),
        "eps": Param(1e-5, "added to the accumulator before the root", low=0),
        "decay": Param(True, "divide steps by the accumulated adjustment"),
        "rule": Param("algorithm", "which statement of the rule", choices=RULES),
        "schedule": Param("constant", "constant settings, or the paper's or the published phase switch",
                          choices=SCHEDULES),
    }

    def __init__(self, **params):
        super().__init__(**params)
        self.track_updates = False  # the engine turns it on when a tracker wants sparsity
        self.switch_step = None  # "published": the first step of phase two
        self.steps_done = 0

    def first_phase(self) -> dict:
        return {"threshold": self.params["threshold"], "decay": False}

    @staticmethod
    def second_phase() -> dict:
        return {"threshold": 0.0, "decay": True}

    def start_run(self, plan):
        super().start_run(plan)
        if self.params["schedule"] == "published":
            first = plan.tasks[0]
            # The script: `if counter < 4 * len(mnist) / 32` (a float), counter from 1.
            self.switch_step = first.epochs * len(first.train_y) / first.batch_size

    def optimizer(self, params):
        p = self.params
        phase = (self.first_phase() if p["schedule"] in ("paper", "published")
                 else {"threshold": p["threshold"], "decay": bool(p["decay"])})
        # foreach explicitly: our flat multi-tensor path is also the fast one on a CPU.
        self.opt = CLASSPOptimizer(params, lr=p["lr"], power=p["power"], eps=p["eps"],
                                   rule=p["rule"], foreach=True, track_updates=self.track_updates,
                                   **phase)
        if self.switch_step is not None and self.switch_step <= 1:
            self._switch()
        return self.opt

    def begin_task(self, task_index, model, optimizer):
        if self.params["schedule"] == "paper" and task_index == 1:
            self._switch()

    def step_done(self):
        if self.switch_step is None:
            return
        self.steps_done += 1
        if self.steps_done + 1 >= self.switch_step > self.steps_done:  # the next step is phase two
            self._switch()

    def _switch(self):
        for group in self.opt.param_groups:
            group.update(self.second_phase())


def _suppresses_nothing(threshold: float, rule: str) -> bool:
    """Whether a threshold never masks a step: 0 for the per-weight rules; below 1 for the
    published code's per-tensor test, which compares a boolean with the threshold."""
    return threshold < 1.0 if rule == "reference-code" else threshold == 0.0


def _decayed_name(power: float, rule: str) -> str | None:
    """The named method CLASSP's decayed step is with no threshold, if it is one."""
    if power == 2.0 and rule == "algorithm":
        return "AdaGrad with eps inside the root"
    if power == 2.0 and rule == "equation":
        return "AdaGrad with eps inside the root over past gradients only"
    return None


def reduction(params: dict) -> str | None:
    """The method CLASSP's settings make it when its threshold suppresses nothing, in words
    (None when the settings are CLASSP's own). Threshold 0 with the decay off throughout is
    plain SGD; threshold 0 with power 2 and the decay on throughout is AdaGrad with eps
    inside the root; the paper's schedules with threshold 0 are SGD on the first task, then
    AdaGrad with the first task's gradients already accumulated."""
    p = {**CLASSPMethod.defaults, **params}
    rule, schedule = p["rule"], p["schedule"]
    if not _suppresses_nothing(float(p["threshold"]), rule):
        return None
    decayed = _decayed_name(float(p["power"]), rule)
    why = (f"threshold {p['threshold']:g} suppresses no step" if rule == "reference-code"
           else "threshold 0 suppresses no step")
    if schedule == "constant" and not p["decay"]:
        return f"plain SGD ({why} and the decay is off)"
    if schedule == "constant" and decayed:
        return f"{decayed} ({why}; power {p['power']:g}, the decay on throughout)"
    if schedule in ("paper", "published") and decayed:
        return (f"plain SGD on the first task, then {decayed}, its accumulator holding the "
                f"first task's gradients ({why}; power {p['power']:g})")
    return None
