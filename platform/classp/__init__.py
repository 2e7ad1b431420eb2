"""CLASSP research platform: the CLASSP optimizer and a continual-learning test bench."""

from classp.optim import CLASSP

__all__ = ["CLASSP"]
__version__ = "0.1.0"
