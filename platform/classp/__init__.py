"""CLASSP research platform: the CLASSP optimizer and a continual-learning test bench.

The library in one import::

    from classp import CLASSP, RunConfig, run, load_sequence, metrics

    result = run(RunConfig(sequence="split-digits", method="classp", method_params={"lr": 0.2}))
    print(metrics.summary(result.accuracy["test"]))

Everything but the optimizer is imported on first use, so that `import classp` stays as
light as torch itself.
"""

from importlib import import_module

from classp.optim import CLASSP

__version__ = "0.1.0"

# name -> module that defines it (imported on first access)
_LAZY = {
    "RunConfig": "classp.engine", "Result": "classp.engine", "run": "classp.engine",
    "load_sequence": "classp.data", "DataOptions": "classp.data", "SEQUENCES": "classp.data",
    "build_method": "classp.methods", "METHODS": "classp.methods",
    "build_model": "classp.models", "MODELS": "classp.models",
}
_MODULES = ("metrics", "stats")

__all__ = ["CLASSP", *_LAZY, *_MODULES]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    if name in _MODULES:
        return import_module(f"classp.{name}")
    raise AttributeError(f"module 'classp' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
