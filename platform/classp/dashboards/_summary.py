"""Summary table: `_get_summary_info` computes the panel's numbers (tested without a
browser), `draw` only draws them."""

from __future__ import annotations

import statistics
from typing import NamedTuple

from classp import stats
from classp.dashboards._common import finished
from classp.dashboards.runs import ExperimentRuns

TITLE = "Summary"
RUNS = "confirm"  # the runs it reads: confirmation runs or study trials

class SummaryInfo(NamedTuple):
    header: list[str]
    rows: list[list[str]]


def _get_summary_info(exp: ExperimentRuns, methods: list[str], split: str) -> SummaryInfo:
    header = ["method", "trials (finished / pruned / failed / diverged)", "confirmation runs",
              f"ACC {split} (%)", f"BWT {split} (points)", f"forgetting {split} (points)",
              "state kept (MB)"]
    rows = []
    for m in methods:
        trials = exp.of("trial", m)
        counts = [sum(r.state == s for r in trials) for s in ("finished", "pruned", "failed", "diverged")]
        confirm = [r for r in finished(exp.of("confirm", m)) if f"{split}.acc" in r.metrics]

        def cell(key: str, scale: float = 100.0, confirm=confirm) -> str:
            if not confirm:
                return "-"
            return stats.summarize([scale * r.metrics[key] for r in confirm]).short()

        state = [r.metrics["state_bytes"] for r in confirm or finished(trials) if "state_bytes" in r.metrics]
        rows.append([m, " / ".join(map(str, counts)), str(len(confirm)),
                     cell(f"{split}.acc"), cell(f"{split}.bwt"), cell(f"{split}.forgetting"),
                     f"{statistics.median(state) / 1e6:.3f}" if state else "-"])
    return SummaryInfo(header, rows)
