"""The dashboard's panels and their one registry.

Each panel is a module of its own, as Optuna writes its plots: `_<panel>.py` holds
`_get_<panel>_info(...)`, which computes the numbers into a NamedTuple (None when the runs
it needs are missing; the page then says what to run), and `draw(info)`, which only draws.
The registry adapts each to one call: `info(experiment, methods, split)`, `draw(info, split)`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from classp.dashboards import (
    _forgetting,
    _history,
    _matrices,
    _memory,
    _pareto,
    _sparsity,
    _summary,
    _table1,
    _verdict,
)
from classp.dashboards.spec import PANELS as PANEL_NAMES


class Panel(NamedTuple):
    title: str
    info: Callable[..., Any]  # (experiment runs, methods, split) -> NamedTuple or None
    draw: Callable[..., Any] | None  # (info, split) -> figure; None: the page draws a table
    needs: str  # which runs: "confirm" or "trial"


def _split_free(draw: Callable) -> Callable:
    return lambda info, split: draw(info)


def _on_trials(get_info: Callable) -> Callable:
    """Trials are scored on the validation split whatever the page reports."""
    return lambda exp, methods, split: get_info(exp, methods)


PANELS: dict[str, Panel] = {
    "verdict": Panel(_verdict.TITLE, _verdict._get_verdict_info, _verdict.draw, _verdict.RUNS),
    "table1": Panel(_table1.TITLE, _table1._get_table1_info, _table1.draw, _table1.RUNS),
    "matrices": Panel(_matrices.TITLE, _matrices._get_matrices_info, _split_free(_matrices.draw),
                      _matrices.RUNS),
    "forgetting": Panel(_forgetting.TITLE, _forgetting._get_forgetting_info,
                        _split_free(_forgetting.draw), _forgetting.RUNS),
    "pareto": Panel(_pareto.TITLE, _on_trials(_pareto._get_pareto_info), _split_free(_pareto.draw),
                    _pareto.RUNS),
    "history": Panel(_history.TITLE, _on_trials(_history._get_history_info),
                     _split_free(_history.draw), _history.RUNS),
    "sparsity": Panel(_sparsity.TITLE, _on_trials(_sparsity._get_sparsity_info),
                      _split_free(_sparsity.draw), _sparsity.RUNS),
    "memory": Panel(_memory.TITLE, _on_trials(_memory._get_memory_info), _split_free(_memory.draw),
                    _memory.RUNS),
    "summary": Panel(_summary.TITLE, _summary._get_summary_info, None, _summary.RUNS),
}

# One list of names (spec.py, which the spec reader checks against), one panel per name.
assert set(PANELS) == set(PANEL_NAMES), "dashboards: spec.PANELS and panels.PANELS differ"
