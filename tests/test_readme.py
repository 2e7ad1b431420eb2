"""The README's sample output is what the code prints: the quick start is rerun here and its
printed block compared with the README's, line by line. A change that alters the numbers
fails this test until the README shows the new ones (run this file with `--update` to
write them: `python tests/test_readme.py --update`)."""

from __future__ import annotations

import re
import sys
import tempfile
from pathlib import Path

from support import REPO, run_classp

README = REPO / "README.md"
MARKER = "<!-- output of the quick start's confirm, checked by tests/test_readme.py -->"
STUDY_MARKER = "<!-- lines of the quick start's study run, checked by tests/test_readme.py -->"
SPEC = "studies/permuted-digits.toml"


def readme_block(text: str, marker: str = MARKER) -> str:
    start = text.index(marker)
    fence = re.compile(r"```text\n(.*?)\n```", re.S)
    return fence.search(text, start).group(1)


def quick_start_output(home: Path) -> tuple[str, str]:
    """What the quick start's study run and confirm print."""
    env = {"CLASSP_HOME": str(home)}
    study = run_classp("study", "run", REPO / SPEC, "--no-progress", env=env, timeout=1200)
    assert study.returncode == 0, study.stderr
    confirm = run_classp("study", "confirm", REPO / SPEC, env=env, timeout=1200)
    assert confirm.returncode == 0, confirm.stderr
    return study.stdout.strip(), confirm.stdout.strip()


def test_the_quick_start_prints_what_the_readme_shows(tmp_path):
    study, confirm = quick_start_output(tmp_path / "home")
    text = README.read_text()
    assert confirm.splitlines()[-1].startswith("verdict: ")  # it ends with the verdict
    assert confirm == readme_block(text), (
        "the README's quick-start output is stale; run `python tests/test_readme.py --update`")
    for line in readme_block(text, STUDY_MARKER).splitlines():  # a sample of the study's lines
        assert line in study.splitlines(), f"README shows a line the study run did not print: {line}"


if __name__ == "__main__" and sys.argv[1:] == ["--update"]:
    with tempfile.TemporaryDirectory() as folder:
        study, new = quick_start_output(Path(folder) / "home")
    text = README.read_text()
    text = text.replace(readme_block(text), new, 1)
    # the study sample: the block of the method named on its first line, as printed now
    old_sample = readme_block(text, STUDY_MARKER)
    method = old_sample.split(":", 1)[0]
    lines = study.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith(method + ":"))
    end = next((i for i in range(first + 1, len(lines)) if not lines[i].startswith("  ")), len(lines))
    sample = "\n".join(line for line in lines[first:end] if "MLflow parent run" not in line)
    README.write_text(text.replace(old_sample, sample, 1))
    print(study, new, sep="\n")
