"""Chance level: the commonest class's share, and the line between learning and not."""

from __future__ import annotations

import pytest

from classp import chance, scenarios
from classp.data import load_sequence


@pytest.mark.parametrize("scenario, chance_level", [("class", 0.1), ("domain", 0.5), ("task", 0.5)])
def test_chance_is_a_uniform_guess_among_the_classes_evaluated(scenario, chance_level):
    sequence = scenarios.apply(load_sequence("split-digits"), scenario)
    assert chance.chance_levels(sequence) == [pytest.approx(chance_level)] * 5


def test_at_chance_is_less_than_a_fifth_of_the_way_from_chance_to_perfect():
    assert chance.threshold(0.1) == pytest.approx(0.28)
    assert chance.threshold(0.5) == pytest.approx(0.6)
    assert chance.at_chance(0.21, [0.1] * 5)  # the quick start's failed SI: about 20% of ten classes
    assert not chance.at_chance(0.9, [0.1] * 5)
    assert chance.at_chance(0.55, [0.5, 0.5])  # two classes: 55% is not learning
    assert not chance.at_chance(0.61, [0.5, 0.5])


def test_the_warning_names_the_method_both_levels_and_the_fix():
    line = chance.chance_warning("si", 0.2, [0.1, 0.1])
    assert line.startswith("si is at chance: it learns its tasks to 20.0% right after training each")
    assert "a uniform guess among 10 classes scores 10.0%" in line and "rerun its study" in line
