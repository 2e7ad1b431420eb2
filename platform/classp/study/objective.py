"""One trial: every tuning seed run through the engine and tracked as one MLflow child run,
the value Optuna is told, and the run's final state."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import statistics

import optuna

from classp import interrupts, metrics
from classp.chance import chance_levels
from classp.engine import Result, RunConfig, StopRun, run
from classp.population import run_population
from classp.specs import MethodSpec, StudySpec
from classp.study.space import suggest
from classp.tracking import (
    TAG_KIND,
    TAG_METHOD,
    TAG_RULE,
    TAG_SEQUENCE,
    TAG_STUDY,
    TAG_TRIAL,
    RunLogger,
    Tracking,
)


class _PruningReporter:
    """Engine observer: after each task, report the mean accuracy so far on the tuning
    split and stop the run if the pruner says so."""

    def __init__(self, trial, split: str, offset: int):
        self.trial, self.split, self.offset = trial, split, offset
        self.pruned = False

    def on_run_start(self, *args):
        pass

    def on_step(self, event):
        pass

    def on_task_end(self, event):
        seen = event.accuracy[self.split][: event.task + 1]
        self.trial.report(sum(seen) / len(seen), self.offset + event.task)
        if self.trial.should_prune():
            self.pruned = True
            raise StopRun

    def on_run_end(self, result):
        pass


def objective_values(spec: StudySpec, results) -> list[float]:
    """Single: mean over seeds of ACC on the tuning split. Two: old-task and new-task
    accuracy (mean final accuracy on tasks 1..T-1, and on task T)."""
    finals = [r.accuracy[spec.tune_split][-1] for r in results]
    if spec.objective == "accuracy":
        return [statistics.fmean(metrics.mean_accuracy(f) for f in finals)]
    return [statistics.fmean(metrics.old_task_accuracy(f) for f in finals),
            statistics.fmean(metrics.new_task_accuracy(f) for f in finals)]


class Objective:
    """Runs trials: every tuning seed, tracked as one MLflow child run per trial. One at a
    time (`__call__`, Optuna's objective) or several as populations (`run_together`)."""

    def __init__(self, spec: StudySpec, method: MethodSpec, sequence, tracking: Tracking,
                 experiment_id: str, parent_id: str):
        self.spec, self.method, self.sequence = spec, method, sequence
        self.tracking, self.experiment_id, self.parent_id = tracking, experiment_id, parent_id

    def __call__(self, trial):
        started = self._start(trial)
        results = []
        for i, seed in enumerate(self.spec.seeds):
            config, observers, pruning = self._seed_run(started, i, seed)
            outcome = self._seed_outcome(trial, run(config, observers, sequence=self.sequence), pruning)
            if not isinstance(outcome, Result):
                return self._raise_or_return(outcome)
            results.append(outcome)
        return self._finish(trial, results)

    def run_together(self, trials) -> list:
        """Several trials, seed by seed, each seed's runs as one population
        (classp.population): what each trial is told, as `__call__` would return it, or the
        TrialPruned it would raise. A trial pruned or diverged in one seed runs no later
        seed, as alone."""
        started = [self._start(t) for t in trials]
        results: list[list] = [[] for _ in trials]
        outcomes: list = [None] * len(trials)
        for i, seed in enumerate(self.spec.seeds):
            going = [k for k, o in enumerate(outcomes) if o is None]
            if not going:
                break
            runs = [self._seed_run(started[k], i, seed) for k in going]
            together = run_population([c for c, _, _ in runs], [o for _, o, _ in runs],
                                      sequence=self.sequence)
            for k, (_, _, pruning), result in zip(going, runs, together):
                outcome = self._seed_outcome(trials[k], result, pruning)
                if isinstance(outcome, Result):
                    results[k].append(outcome)
                else:
                    outcomes[k] = outcome
        told = []
        for trial, trial_results, outcome in zip(trials, results, outcomes):
            if outcome is None:
                told.append(self._finish(trial, trial_results))
            elif isinstance(outcome, optuna.TrialPruned):
                told.append(outcome)  # the caller tells the study it was pruned
            else:
                told.append(self._raise_or_return(outcome))
        return told

    # -- the steps of a trial -------------------------------------------------------------
    def _start(self, trial) -> tuple:
        """Suggest the trial's parameters and open its MLflow child run."""
        params = suggest(trial, self.method)
        method_params = {**self.method.fixed, **params}
        # Named so that the MLflow runs list reads without opening a run.
        run_name = f"{self.method.name} trial {trial.number}"
        # A Ctrl-C that lands between the run's creation and the trial's note of it would
        # leave a run nobody ends: it waits until both are written.
        with interrupts.deferred():
            run_id = self.tracking.child_run(self.experiment_id, self.parent_id, run_name, {
                TAG_KIND: "trial", TAG_STUDY: self.spec.study_name(self.method.name),
                TAG_METHOD: self.method.name, TAG_SEQUENCE: self.spec.sequence,
                TAG_TRIAL: str(trial.number), TAG_RULE: str(method_params.get("rule", "-"))})
            trial.set_user_attr("mlflow_run_id", run_id)
        interrupts.check()
        return trial, params, run_id

    def _seed_run(self, started: tuple, i: int, seed: int):
        """The config and observers of a trial's i-th seed. The first seed logs everything
        (steps, sparsity, artifacts); later seeds log their final metrics and matrix under
        a seed prefix."""
        trial, params, run_id = started
        first = i == 0
        logger = RunLogger(self.tracking.client, run_id, log_steps=first,
                           log_params=first, prefix="" if first else f"seed{seed}/",
                           extra_params={"study": self.spec.study_name(self.method.name),
                                         "trial": trial.number, "seeds": list(self.spec.seeds)})
        observers = [logger]
        pruning = None
        if self.spec.pruner != "none":
            pruning = _PruningReporter(trial, self.spec.tune_split, i * len(self.sequence.tasks))
            observers.append(pruning)
        config = trial_config(self.spec, self.method, params, seed, self.sequence.name)
        if not first:
            config = dataclasses.replace(config, track_updates=False)
        return config, observers, pruning

    def _seed_outcome(self, trial, result: Result, pruning):
        """The seed's Result, or why the trial ends here: pruned or diverged."""
        if pruning is not None and pruning.pruned:
            trial.set_user_attr("status", "pruned")
            return optuna.TrialPruned(f"pruned after task {len(result.accuracy['val']) - 1}")
        if result.status == "diverged":
            trial.set_user_attr("status", "diverged")
            trial.set_user_attr("diverged_at_step", result.diverged_at["step"])
            return "diverged"
        return result

    def _raise_or_return(self, outcome):
        if isinstance(outcome, optuna.TrialPruned):
            raise outcome
        # Diverged. NaN: Optuna records the trial as failed, and the sampler learns nothing
        # false from a made-up score.
        return [math.nan] * len(self.spec.directions)

    def _finish(self, trial, results: list[Result]) -> list[float]:
        values = objective_values(self.spec, results)
        # Kept beside the score so that a study can say when its best trial learnt nothing.
        trial.set_user_attr("learned", statistics.fmean(
            metrics.learning_accuracy(r.accuracy[self.spec.tune_split]) for r in results))
        trial.set_user_attr("chances", chance_levels(self.sequence))
        trial.set_user_attr("status", "finished")
        return values


def run_state(trial) -> str:
    """The state a finished trial's MLflow run ends in (see `Tracking.finish`)."""
    if trial.user_attrs.get("status") == "diverged":
        return "diverged"
    return {optuna.trial.TrialState.COMPLETE: "finished",
            optuna.trial.TrialState.PRUNED: "pruned"}.get(trial.state, "failed")


class TrialRecorder:
    """Optuna callback: end each trial's MLflow run with its state, and keep the parent
    run's running best."""

    def __init__(self, tracking: Tracking, parent_id: str, names: list[str]):
        self.tracking, self.parent_id, self.names = tracking, parent_id, names

    def __call__(self, study, trial) -> None:

        run_id = trial.user_attrs.get("mlflow_run_id")
        if run_id is None:
            return
        state = run_state(trial)
        client = self.tracking.client
        if trial.values:
            for name, value in zip(self.names, trial.values):
                client.log_metric(run_id, f"objective.{name}", value)
        self.tracking.finish(run_id, state)
        if len(self.names) == 1:
            with contextlib.suppress(ValueError):
                client.log_metric(self.parent_id, "best_value", study.best_value, step=trial.number)
        done = sum(t.state.is_finished() for t in study.get_trials(deepcopy=False))
        client.log_metric(self.parent_id, "trials_done", done, step=trial.number)


def objective_names(spec: StudySpec) -> list[str]:
    return [f"{spec.tune_split}_accuracy"] if spec.objective == "accuracy" else [
        "old_task_accuracy", "new_task_accuracy"]


def trial_config(spec: StudySpec, method: MethodSpec, params: dict, seed: int,
                 sequence: str | None = None) -> RunConfig:
    """The run of one seed of a trial (or of a confirmation) with these parameters, on the
    spec's sequence or, for a held-out tuning stream, on `sequence`."""
    splits = ("val", "test") if spec.tune_split != "train" else ("val", "test", "train")
    return RunConfig(sequence=sequence or spec.sequence, method=method.name,
                     method_params={**method.fixed, **params}, seed=seed, track_updates=True,
                     eval_splits=splits, **spec.run)

