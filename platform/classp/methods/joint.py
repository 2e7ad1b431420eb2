"""Joint training, the upper bound: every task's data seen together.

union "growing" (default): at task k the model trains on the union of tasks 1..k shuffled
together, so every row of the accuracy matrix is an upper bound for its point in the
sequence. "final": nothing is trained until the last task, which trains on the union of
all tasks, once (Hsu et al.'s `--offline_training`): the same upper bound for the last
row, reached with fewer steps; earlier rows are the untrained model. With a head per task
each sample goes through its own.
"""

from classp.methods.base import STEPPED_BY, SteppedBy
from classp.methods.params import Param

UNIONS = ("growing", "final")


class Joint(SteppedBy):
    name = "joint"
    joint = True
    PARAMS = {**STEPPED_BY, "union": Param("growing", "growing: all tasks so far at each task; final: all at once at the last", choices=UNIONS)}

    def skips_task(self, task_index: int, num_tasks: int) -> bool:
        return self.params["union"] == "final" and task_index < num_tasks - 1
