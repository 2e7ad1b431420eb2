"""Names reach MLflow's search filters quoted: quotes, backslashes and unicode in a study
name find their own runs; a name MLflow cannot match is refused where it enters."""

from __future__ import annotations

import pytest

from classp.errors import UserError
from classp.specs import load_spec
from classp.tracking import Tracking, filter_literal
from support import TINY_STUDY


@pytest.mark.parametrize("name", ["it's", 'say "hi"', "back\\slash", "ünï ✓ 研究", "plain"])
def test_a_study_name_finds_its_own_parent_run_whatever_it_holds(tmp_path, name):
    tracking = Tracking(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = tracking.experiment("split-digits")
    other = tracking.parent_run(experiment, name + "-other", {})
    first = tracking.parent_run(experiment, name, {})
    again = tracking.parent_run(experiment, name, {})  # found by its tag, not created again
    assert first == again != other
    found = tracking.client.search_runs([experiment], f"tags.`classp.study` = {filter_literal(name)}")
    assert [r.info.run_id for r in found] == [first]


@pytest.mark.parametrize("name, message", [
    ("both ' and \"", "holds both ' and \"; MLflow's search cannot match such a name"),
    ("x" * 201, "is 201 characters long; use at most 200"),
    ("tab\there", "holds control characters"),
])
def test_a_study_name_mlflow_cannot_hold_is_refused_in_the_spec(tmp_path, name, message):
    spec = tmp_path / "spec.toml"
    escaped = name.replace("\\", "\\\\").replace('"', '\\"').replace("\t", "\\t")
    spec.write_text(TINY_STUDY.read_text().replace('name = "tiny"', f'name = "{escaped}"'))
    with pytest.raises(UserError, match="study.name") as error:
        load_spec(spec)
    assert message in str(error.value)
    assert "\n" not in str(error.value)
