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
SPEC = "studies/permuted-digits.toml"


def readme_block(text: str) -> str:
    start = text.index(MARKER)
    fence = re.compile(r"```text\n(.*?)\n```", re.S)
    return fence.search(text, start).group(1)


def quick_start_output(home: Path) -> str:
    env = {"CLASSP_HOME": str(home)}
    study = run_classp("study", "run", REPO / SPEC, "--no-progress", env=env, timeout=1200)
    assert study.returncode == 0, study.stderr
    confirm = run_classp("study", "confirm", REPO / SPEC, env=env, timeout=1200)
    assert confirm.returncode == 0, confirm.stderr
    return confirm.stdout.strip()


def test_the_quick_start_prints_what_the_readme_shows(tmp_path):
    printed = quick_start_output(tmp_path / "home")
    assert printed.splitlines()[-1].startswith("verdict: ")  # it ends with the verdict
    assert printed == readme_block(README.read_text()), (
        "the README's quick-start output is stale; run `python tests/test_readme.py --update`")


if __name__ == "__main__" and sys.argv[1:] == ["--update"]:
    with tempfile.TemporaryDirectory() as folder:
        new = quick_start_output(Path(folder) / "home")
    text = README.read_text()
    old = readme_block(text)
    README.write_text(text.replace(old, new, 1))
    print(new)
