"""How many intra-op threads a training process uses, and how its idle threads wait.

OpenMP's default wait spins: a thread whose core another process has taken holds every
parallel region up until the scheduler runs it again, and a small model's step, made of
many tiny parallel regions, slows several times beside one busy process
(benchmarks/population.py measures it on the machine it runs on). A passive wait (idle
threads sleep) avoids that, but costs a wake-up per region on an idle machine. So, before
torch loads OpenMP:

- threads = this process's share of the cores (cores // workers). Not fewer when the
  machine is busy: a float reduction's result depends on how many threads split it, and
  a chaotic rule (CLASSP at a high lr, eps near 0) turns that rounding into a different
  run, so a run's numbers must not depend on the machine's load when it started;
- the wait is passive when other processes keep cores busy at the start (the wait policy
  changes no number, only the time);
- `OMP_NUM_THREADS` (and `OMP_WAIT_POLICY`) set by the user always win: one thread is the
  fastest on a shared machine for a small model, and the same on every machine.

The choice is logged with every run (params `threads`, `omp_wait_policy`, `threads_chosen_by`).
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass

# A busy core is one another process keeps at least this busy; below, it is noise.
BUSY_SHARE = 0.5  # cores other processes keep busy from which the machine counts as shared
SAMPLE_SECONDS = 0.2
# Set by `--workers` for each worker, so that a worker records who chose its threads.
CHOSEN_BY_VARIABLE = "CLASSP_THREADS_CHOSEN_BY"


@dataclass(frozen=True)
class ThreadChoice:
    threads: int
    wait_policy: str | None  # None: OpenMP's default (spin a while, then sleep)
    chosen_by: str  # how: "environment", or what was measured

    def environment(self) -> dict[str, str]:
        """The variables a process (or a worker) needs to start with this choice."""
        env = {"OMP_NUM_THREADS": str(self.threads), CHOSEN_BY_VARIABLE: self.chosen_by}
        if self.wait_policy:
            env["OMP_WAIT_POLICY"] = self.wait_policy
        return env


def busy_cores(sample_seconds: float = SAMPLE_SECONDS) -> float:
    """Cores other processes keep busy now: /proc/stat over a short sample (this process
    is idle meanwhile), or the 1-minute load average where /proc is not there."""
    first = _cpu_times()
    if first is None:
        try:
            return float(os.getloadavg()[0])
        except OSError:
            return 0.0
    time.sleep(sample_seconds)
    second = _cpu_times()
    busy, total = (b - a for a, b in zip(first, second))
    cores = os.cpu_count() or 1
    return cores * busy / total if total > 0 else 0.0


def _cpu_times() -> tuple[int, int] | None:
    """(busy, total) jiffies of all cores since boot."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields) - idle, sum(fields)


def choose(workers: int = 1, cores: int | None = None, busy: float | None = None,
           env: dict[str, str] | None = None) -> ThreadChoice:
    """The threads of each of `workers` training processes on this machine."""
    env = os.environ if env is None else env
    if env.get("OMP_NUM_THREADS", "").strip().isdigit() and int(env["OMP_NUM_THREADS"]) >= 1:
        return ThreadChoice(int(env["OMP_NUM_THREADS"]), env.get("OMP_WAIT_POLICY") or None,
                            env.get(CHOSEN_BY_VARIABLE, "environment"))
    cores = cores or os.cpu_count() or 1
    busy = busy_cores() if busy is None else busy
    threads = max(1, cores // max(1, workers))
    shared = busy >= BUSY_SHARE  # another process keeps at least half a core busy
    how = f"{cores} cores, {busy:.1f} busy, {workers} worker{'s' if workers > 1 else ''}"
    return ThreadChoice(threads, "PASSIVE" if shared and threads > 1 else None, how)


def apply(choice: ThreadChoice) -> None:
    """Make this process use `choice`. Before torch is imported, through the environment
    (OpenMP reads its wait policy once, when it loads); after, the thread count only."""
    os.environ.update(choice.environment())
    if "torch" in sys.modules:
        import torch

        torch.set_num_threads(choice.threads)


def recorded() -> dict[str, object]:
    """What a run logs: the threads torch really uses and how they were chosen."""
    import torch

    return {"threads": torch.get_num_threads(),
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "default"),
            "threads_chosen_by": os.environ.get(CHOSEN_BY_VARIABLE, "torch's default")}
