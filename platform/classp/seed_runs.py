"""The seeds of one setting, each tracked as an MLflow child run, trained one by one or in
populations (classp.population): what `classp study confirm` and `classp reproduce` do
for every cell of their tables."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from classp.engine import Result, RunConfig, run
from classp.population import check_can_train, run_population
from classp.tracking import RunLogger, Tracking

# What a seed's run is: (run name, tags, config, extra params the run logs).
Described = tuple[str, dict[str, str], RunConfig, dict]


def tracked_seed_runs(tracking: Tracking, experiment_id: str, parent_id: str, seeds: list[int],
                      population: int, sequence, describe: Callable[[int], Described]
                      ) -> Iterator[tuple[int, Result]]:
    """(seed, result) for each seed, in order; each run ended in MLflow with its status
    (a stopped run, which only an interrupt makes here, as failed)."""
    for start in range(0, len(seeds), population):
        chunk = seeds[start:start + population]
        described = [describe(seed) for seed in chunk]
        configs = [config for _, _, config, _ in described]
        if len(chunk) > 1:  # refused before any run of the chunk is recorded
            for config in configs:
                check_can_train(config, sequence)
        run_ids = [tracking.child_run(experiment_id, parent_id, name, tags)
                   for name, tags, _, _ in described]
        observers = [[RunLogger(tracking.client, run_id, extra_params=extra)]
                     for run_id, (_, _, _, extra) in zip(run_ids, described)]
        with contextlib.ExitStack() as ending:
            for run_id in run_ids:
                ending.enter_context(tracking.ending_on_error(run_id))
            results = (run_population(configs, observers, sequence=sequence) if len(chunk) > 1
                       else [run(configs[0], observers[0], sequence=sequence)])
        for seed, run_id, result in zip(chunk, run_ids, results):
            tracking.finish(run_id, result.status if result.status != "stopped" else "failed")
            yield seed, result


class SeedProgress:
    """The per-seed lines of a reproduction: '[done/total] label | seed s: outcome (t s)'.
    A finished run's outcome is what `record` keeps of it (and says); any other is noted
    in `diverged` with the step it stopped at."""

    def __init__(self, total: int, echo: Callable[[str], None]):
        self.total, self.done, self.echo = total, 0, echo

    def __call__(self, label: str, seed: int, result: Result, record: Callable[[Result], str],
                 diverged: list[int]) -> None:
        self.done += 1
        if result.status == "finished":
            outcome = record(result)
        else:
            diverged.append(seed)
            outcome = f"{result.status} at step {(result.diverged_at or {}).get('step')}"
        self.echo(f"[{self.done}/{self.total}] {label} | seed {seed}: {outcome} "
                  f"({result.seconds:.0f} s)")
