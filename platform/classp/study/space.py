"""A method's search space as Optuna sees it: distributions, suggestions, the paper's
settings as the first trial, the sampler and the pruner."""

from __future__ import annotations

import warnings
from typing import Any

import optuna

from classp.errors import UserError
from classp.specs import Choice, FloatRange, MethodSpec, StudySpec


def search_distributions(method: MethodSpec) -> dict:
    """The method's search space as Optuna distributions, by parameter name. A range with
    `none = true` adds a `<name>_on` switch: "no threshold" is a choice of its own, not a
    tiny value."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    space: dict = {}
    for name, dist in method.search.items():
        if isinstance(dist, Choice):
            space[name] = CategoricalDistribution(list(dist.choices))
            continue
        if dist.none:
            space[f"{name}_on"] = CategoricalDistribution([True, False])
        space[name] = FloatDistribution(dist.low, dist.high, log=dist.log)
    return space


def suggest(trial, method: MethodSpec) -> dict[str, Any]:
    from optuna.distributions import CategoricalDistribution

    space = search_distributions(method)

    def ask(name: str):
        dist = space[name]
        if isinstance(dist, CategoricalDistribution):
            return trial.suggest_categorical(name, list(dist.choices))
        return trial.suggest_float(name, dist.low, dist.high, log=dist.log)

    params: dict[str, Any] = {}
    for name in method.search:
        if f"{name}_on" in space and not ask(f"{name}_on"):
            params[name] = 0.0
            continue
        params[name] = ask(name)
    return params


def check_search_space(study, method: MethodSpec) -> None:
    """Optuna refuses, mid-study, a parameter whose distribution changed kind (float to
    choices, log to linear, other choices). Catch that before any trial runs and say how
    to go on; a range that only moved its bounds is fine."""
    space = search_distributions(method)
    for trial in study.get_trials(deepcopy=False):
        for name, old in trial.distributions.items():
            new = space.get(name)
            if new is None or _same_kind(old, new):
                continue
            raise UserError(
                f"study {study.study_name!r} already has trials where {name} was "
                f"{_describe(old)}; the spec now says {_describe(new)}: give the study a new "
                f"name ([study] name) or delete the old one (optuna delete-study --study-name "
                f"NAME --storage URL)")


def _describe(dist) -> str:
    from optuna.distributions import CategoricalDistribution

    if isinstance(dist, CategoricalDistribution):
        return f"one of {list(dist.choices)}"
    return f"a {'log' if getattr(dist, 'log', False) else 'linear'} range [{dist.low:g}, {dist.high:g}]"


def _same_kind(old, new) -> bool:
    from optuna.distributions import CategoricalDistribution

    if type(old) is not type(new):
        return False
    if isinstance(old, CategoricalDistribution):
        return old.choices == new.choices
    return getattr(old, "log", None) == getattr(new, "log", None)


def paper_trial_params(method: MethodSpec) -> dict[str, Any]:
    """The paper's settings in the study's parameter names (for enqueue_trial)."""
    out: dict[str, Any] = {}
    for name, value in (method.paper or {}).items():
        dist = method.search[name]
        if isinstance(dist, FloatRange) and dist.none:
            on = value not in (0, 0.0, None, "none")
            out[f"{name}_on"] = on
            if on:
                out[name] = float(value)
        else:
            out[name] = value
    return out


def make_sampler(spec: StudySpec):
    if spec.sampler == "random":
        return optuna.samplers.RandomSampler(seed=spec.sampler_seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # Optuna 5's defaults, set explicitly; group=True for the conditional threshold.
        return optuna.samplers.TPESampler(seed=spec.sampler_seed, multivariate=True, group=True,
                                          constant_liar=True, n_startup_trials=5)


def make_pruner(spec: StudySpec):
    if spec.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=spec.pruner_startup_trials)
    return optuna.pruners.NopPruner()

