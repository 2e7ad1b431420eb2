"""CLASSP research platform: the CLASSP optimizer and a continual-learning test bench.

The library in one import::

    from classp import CLASSP, RunConfig, run, load_sequence, metrics

    result = run(RunConfig(sequence="split-digits", method="classp", method_params={"lr": 0.2}))
    print(metrics.summary(result.accuracy["test"]))

Everything, the optimizer included, is imported on first use: `import classp` (and so the
`classp` command before it parses its arguments) does not import torch, which takes seconds;
a Ctrl-C in those seconds then ends in the command's own one-line message.
"""

from importlib import import_module

__version__ = "0.1.0"

# name -> module that defines it (imported on first access)
_LAZY = {
    "CLASSP": "classp.optim",
    "RunConfig": "classp.engine", "Result": "classp.engine", "run": "classp.engine",
    "load_sequence": "classp.data", "DataOptions": "classp.data", "SEQUENCES": "classp.data",
    "build_method": "classp.methods", "METHODS": "classp.methods",
    "build_model": "classp.models", "MODELS": "classp.models",
}
_MODULES = ("metrics", "stats")

__all__ = [*_LAZY, *_MODULES]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    if name in _MODULES:
        return import_module(f"classp.{name}")
    raise AttributeError(f"module 'classp' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
