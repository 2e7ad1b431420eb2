"""The tuning protocols: which data a study's trials may tune on ([tuning] in a spec), and
the line `classp study confirm` opens with to say so (docs/protocols.md)."""

from __future__ import annotations

from dataclasses import dataclass

TUNING_PROTOCOLS = ("same-stream", "first-tasks", "held-out-stream")


@dataclass(frozen=True)
class Tuning:
    """Which data a study's trials tune on ([tuning] in a spec).

    - "same-stream": every task of the reported stream (validation splits); the chosen
      values have seen the future, as most published tuning has.
    - "first-tasks": the first `tasks` tasks only (Chaudhry et al. 2019); confirmation
      trains the whole stream and reports the tasks after them.
    - "held-out-stream": another stream, `stream`, that shares no task with the reported
      one (Cha and Cho 2024): e.g. tune on split-fmnist, report split-mnist.
    """

    protocol: str = "same-stream"
    tasks: int | None = None
    stream: str | None = None

    @property
    def key(self) -> str:
        """One string that tells two tunings apart (kept on the Optuna study)."""
        return {"first-tasks": f"first-tasks:{self.tasks}",
                "held-out-stream": f"held-out-stream:{self.stream}"}.get(self.protocol, self.protocol)

    @classmethod
    def from_key(cls, key: str) -> Tuning:
        """The tuning a `key` names (as kept on studies and parent runs)."""
        protocol, _, value = key.partition(":")
        if protocol == "first-tasks":
            return cls(protocol, tasks=int(value))
        if protocol == "held-out-stream":
            return cls(protocol, stream=value)
        return cls(protocol)

    @property
    def first_reported(self) -> int:
        """The index of the first task confirmation reports."""
        return self.tasks if self.protocol == "first-tasks" else 0

    def describe(self, sequence: str, task_names: list[str]) -> str:
        """The line confirm opens with: which protocol chose the hyperparameters."""
        if self.protocol == "first-tasks":
            tuned, reported = task_names[:self.tasks], task_names[self.tasks:]
            return (f"hyperparameters chosen by the first-tasks tuning protocol: trials trained "
                    f"and scored on {', '.join(tuned)} only; reported here: {', '.join(reported)}")
        if self.protocol == "held-out-stream":
            return (f"hyperparameters chosen by the held-out-stream tuning protocol: trials ran "
                    f"on {self.stream}, which shares no task with {sequence}, reported here")
        return (f"hyperparameters chosen by the same-stream tuning protocol: trials ran on the "
                f"validation splits of every task of {sequence}, the stream reported here (the "
                f"chosen values have seen every task)")
