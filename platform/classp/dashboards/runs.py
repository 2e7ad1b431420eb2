"""What the dashboards read from MLflow: the runs of one experiment, as plain records."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from classp.tracking import TAG_KIND, TAG_METHOD, TAG_STATE, TAG_TRIAL


@dataclass
class RunRecord:
    run_id: str
    kind: str  # "study", "trial" or "confirm"
    method: str
    state: str  # finished, pruned, failed, diverged (trials and confirm runs)
    metrics: dict[str, float] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    trial: int | None = None
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def tasks(self) -> list[str]:
        return self.params.get("tasks", "").split(",") if self.params.get("tasks") else []

    def reported_finals(self, split: str) -> list[float] | None:
        """Final accuracy on the tasks a confirmation reports: all of them, or under the
        first-tasks tuning protocol those after the tuning tasks (`reported_tasks`)."""
        finals = self.final_accuracies(split)
        reported = self.params.get("reported_tasks")
        if finals is None or not reported or not self.tasks:
            return finals
        return [a for name, a in zip(self.tasks, finals) if name in reported.split(",")]

    def final_accuracies(self, split: str) -> list[float] | None:
        """Final accuracy on every task (from the `<split>.final_acc_task<j>` metrics)."""
        values, j = [], 1
        while f"{split}.final_acc_task{j}" in self.metrics:
            values.append(self.metrics[f"{split}.final_acc_task{j}"])
            j += 1
        return values or None


@dataclass
class ExperimentRuns:
    """The runs of one task sequence, and how to read a run's JSON artifacts: from the
    tracking store (`load_experiment`), or from memory (the panels' tests)."""

    sequence: str
    runs: list[RunRecord]
    read_json: Callable[[str, str], dict | None]  # (run id, artifact path) -> its content

    def of(self, kind: str, method: str, state: str | None = None) -> list[RunRecord]:
        return [r for r in self.runs if r.kind == kind and r.method == method
                and (state is None or r.state == state)]

    def artifact_json(self, run_id: str, path: str) -> dict | None:
        return self.read_json(run_id, path)


def artifact_reader(client) -> Callable[[str, str], dict | None]:
    """Read a run's JSON artifact through an MLflow client; None where the run has none."""

    def read(run_id: str, path: str) -> dict | None:
        try:
            with tempfile.TemporaryDirectory() as folder:
                return json.loads(Path(client.download_artifacts(run_id, path, folder)).read_text())
        except Exception:  # a run without that artifact (pruned early, say)
            return None

    return read


def load_experiment(client, sequence: str) -> ExperimentRuns | None:
    """All classp runs of the experiment named after the sequence; None if it does not exist."""
    experiment = client.get_experiment_by_name(sequence)
    if experiment is None:
        return None
    records, token = [], None
    while True:
        page = client.search_runs([experiment.experiment_id], f"tags.`{TAG_KIND}` != ''",
                                  max_results=1000, page_token=token)
        for run in page:
            tags = run.data.tags
            trial = tags.get(TAG_TRIAL)
            records.append(RunRecord(
                run_id=run.info.run_id, kind=tags.get(TAG_KIND, ""), method=tags.get(TAG_METHOD, ""),
                state=tags.get(TAG_STATE, "running" if run.info.status == "RUNNING" else ""),
                metrics=dict(run.data.metrics), params=dict(run.data.params),
                trial=int(trial) if trial is not None and trial.isdigit() else None,
                tags={k: v for k, v in tags.items() if k.startswith("classp.")}))
        token = page.token
        if not token:
            break
    return ExperimentRuns(sequence, records, artifact_reader(client))
