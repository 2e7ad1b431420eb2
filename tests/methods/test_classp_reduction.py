"""When CLASSP's settings make it another method, and only then."""

from __future__ import annotations

import pytest

from classp.methods.classp import reduction


@pytest.mark.parametrize("params, named", [
    (dict(threshold=0.0, power=2.0, decay=True, schedule="constant"), "AdaGrad with eps inside the root ("),
    (dict(threshold=0.0, power=1.0, decay=False, schedule="constant"), "plain SGD"),
    (dict(threshold=0.0, power=2.0, decay=False, schedule="constant"), "plain SGD"),
    (dict(threshold=0.0, power=2.0, schedule="paper"), "plain SGD on the first task, then AdaGrad"),
    (dict(threshold=0.0, power=2.0, rule="equation"), "AdaGrad with eps inside the root over past gradients only"),
    # the published code's per-tensor test never masks below a threshold of 1
    (dict(threshold=0.5, decay=False, rule="reference-code"), "plain SGD (threshold 0.5 suppresses no step"),
])
def test_settings_that_are_another_method_are_named(params, named):
    assert reduction(params).startswith(named)


@pytest.mark.parametrize("params", [
    dict(threshold=1e-6, power=2.0, decay=True),  # a threshold that masks: CLASSP
    dict(threshold=0.5, power=1.0, schedule="paper"),  # the paper's own settings
    dict(threshold=0.0, power=1.0, decay=True),  # no threshold, but no named method either
    dict(threshold=0.0, power=2.0, decay=True, rule="reference-code"),  # |g| summed, not g^2
    dict(threshold=1.0, decay=False, rule="reference-code"),  # masks every step
])
def test_classps_own_settings_are_not_renamed(params):
    assert reduction(params) is None
