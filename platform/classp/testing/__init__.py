"""Oracles for the tests and the benchmarks, kept apart from the platform's own code (as
Optuna keeps `optuna.testing`): nothing that trains or tracks imports them."""
