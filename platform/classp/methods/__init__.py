"""Continual-learning methods, one short module each, registered by name."""

from __future__ import annotations

from classp.errors import UserError
from classp.methods.adagrad import AdaGrad
from classp.methods.adam import Adam
from classp.methods.base import Method
from classp.methods.classp import CLASSPMethod
from classp.methods.ewc import EWC
from classp.methods.joint import Joint
from classp.methods.l2 import L2
from classp.methods.mas import MAS
from classp.methods.sgd import SGD
from classp.methods.si import SI

METHODS: dict[str, type[Method]] = {
    m.name: m for m in (CLASSPMethod, EWC, SGD, Adam, AdaGrad, SI, L2, MAS, Joint)
}


def check_method_name(name: str) -> None:
    if name not in METHODS:
        raise UserError(f"unknown method {name!r}; choose one of: {', '.join(METHODS)}")


def build_method(name: str, params: dict | None = None) -> Method:
    check_method_name(name)
    return METHODS[name](**(params or {}))


__all__ = ["METHODS", "Method", "build_method", "check_method_name"]
