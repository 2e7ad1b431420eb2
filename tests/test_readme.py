"""The README's sample output is what the code prints: the quick start is rerun here and its
printed block compared with the README's, line by line. A change that alters the numbers
fails this test until the README shows the new ones (run this file with `--update` to
write them: `python tests/test_readme.py --update`; `--update --tables-only` rebuilds the
reproduced tables from their kept outputs without rerunning the quick start).

Training reproduces bit for bit on one kind of machine only: another CPU's vector kernels
round differently, and the trajectories part. The README names the machine that printed
its block; on another one the rerun must print the same lines with numbers that lie in
the rerun's own 95% intervals, and the same verdict."""

from __future__ import annotations

import platform
import re
import sys
import tempfile
from pathlib import Path

import pytest
import torch

from classp.stats import t_interval_of
from classp.threads import choose as choose_threads
from support import REPO, run_classp

README = REPO / "README.md"
# The README and the pages it sends readers on to: a checked block may live in any of them.
DOCUMENTS = [README, *sorted((REPO / "docs").glob("*.md"))]
README_LINE_LIMIT = 250  # a newcomer reads it in five minutes
MARKER = "<!-- output of the quick start's confirm, checked by tests/test_readme.py -->"
STUDY_MARKER = "<!-- lines of the quick start's study run, checked by tests/test_readme.py -->"
SPEC = "studies/permuted-digits.toml"
TABLE1_MARKER = "<!-- output of reproduce --from-logs, checked by tests/test_readme.py -->"
TABLE1_LOGS = sorted((REPO / "benchmarks" / "results" / "h100-2026-11-23").glob("table1-row*.txt"))
SIXTH_MARKER = "<!-- output of reproduce --from-logs at 1/6 scale, checked by tests/test_readme.py -->"
SIXTH_LOGS = sorted((REPO / "benchmarks" / "results" / "cpu-one-sixth").glob("table1-rows*.txt"))
HSU_MARKER = "<!-- output of reproduce --from-logs for Hsu et al.'s table, checked by tests/test_readme.py -->"
HSU_LOGS = sorted((REPO / "benchmarks" / "results" / "cpu-amd-epyc-2026-12-03").glob("hsu2018-rows*.txt"))
HSU_SPEC = REPO / "studies" / "hsu2018-split-mnist.toml"


def readme_block(text: str, marker: str = MARKER) -> str:
    start = text.index(marker)
    fence = re.compile(r"```text\n(.*?)\n```", re.S)
    return fence.search(text, start).group(1)


def holding(marker: str) -> Path:
    """The one document that holds `marker`'s block."""
    found = [path for path in DOCUMENTS if marker in path.read_text()]
    assert len(found) == 1, f"{marker} is in {len(found)} documents: {found}"
    return found[0]


def block(marker: str) -> str:
    return readme_block(holding(marker).read_text(), marker)


def replace_block(marker: str, new: str) -> None:
    path = holding(marker)
    text = path.read_text()
    path.write_text(text.replace(readme_block(text, marker), new, 1))


MACHINE_LINE = re.compile(r"The block above was printed on `([^`]+)`")


def this_machine() -> str:
    """The CPU model, its architecture and the vector instructions torch uses, torch's
    version and the threads the quick start trains with: what decides the rounding of a
    CPU training run."""
    model = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = re.findall(r"^model name\s*:\s*(.+)$", cpuinfo.read_text(), re.M)
        model = names[0].strip() if names else model
    threads = choose_threads(busy=0.0).threads  # as `classp study run` chooses them
    return (f"{model} ({platform.machine()}, {torch.backends.cpu.get_cpu_capability()}), "
            f"torch {torch.__version__}, {threads} thread{'s' if threads > 1 else ''}")


# Any number, p-values in exponent form too ("p=2.5e-05" here may print "p=0.0001" there).
NUMBER = re.compile(r"[+-]?\d+(?:\.\d+)?(?:e[+-]?\d+)?")
CELL = re.compile(r"([+-]?\d+\.\d+) ± (\d+\.\d+)(?: \[([+-]?\d+\.\d+), ([+-]?\d+\.\d+)\])?")
PAIRED = re.compile(r"= ([+-]?\d+\.\d+) points, 95% CI \[([+-]?\d+\.\d+), ([+-]?\d+\.\d+)\]")


def intervals(block: str) -> list[tuple[float, float, float]]:
    """(value, low, high) for every mean the confirm block prints: its printed 95% interval
    where it has one, else the t-interval of a mean ± std over the block's n seeds."""
    n = int(re.search(r"n=(\d+)", block).group(1))
    found = []
    for mean, std, low, high in CELL.findall(block):
        m = float(mean)
        found.append((m, float(low), float(high)) if low
                     else (m, *t_interval_of(m, float(std), n)))
    found += [tuple(map(float, groups)) for groups in PAIRED.findall(block)]
    return found


def assert_within_rerun(readme: str, rerun: str) -> None:
    """On a machine other than the README's: the same lines apart from the numbers, each
    of the README's means inside the rerun's interval for it."""
    assert NUMBER.sub("#", readme) == NUMBER.sub("#", rerun), (
        "the README's quick-start output differs from the rerun in more than its numbers; "
        "run `python tests/test_readme.py --update`")
    for (shown, _, _), (value, low, high) in zip(intervals(readme), intervals(rerun)):
        assert low <= shown <= high, (
            f"the README shows {shown}, outside the rerun's 95% interval [{low}, {high}] "
            f"(rerun: {value}); run `python tests/test_readme.py --update`")


def quick_start_output(home: Path) -> tuple[str, str]:
    """What the quick start's study run and confirm print."""
    env = {"CLASSP_HOME": str(home)}
    study = run_classp("study", "run", REPO / SPEC, "--no-progress", env=env, timeout=1200)
    assert study.returncode == 0, study.stderr
    confirm = run_classp("study", "confirm", REPO / SPEC, env=env, timeout=1200)
    assert confirm.returncode == 0, confirm.stderr
    return study.stdout.strip(), confirm.stdout.strip()


PER_TRIAL_LIMIT = 100 * 1024  # bytes of artifacts per run
TOTAL_LIMIT = 15 * 2**20  # bytes of everything the quick start leaves in CLASSP_HOME


def footprint(home: Path) -> tuple[int, int, int]:
    """(the largest run's artifact bytes, number of runs, all bytes under `home`)."""
    runs = [d for d in (home / "artifacts").glob("*/*") if d.is_dir()]
    per_run = [sum(f.stat().st_size for f in d.rglob("*") if f.is_file()) for d in runs]
    total = sum(f.stat().st_size for f in home.rglob("*") if f.is_file())
    return max(per_run), len(runs), total


def test_the_quick_start_prints_what_the_readme_shows(tmp_path):
    study, confirm = quick_start_output(tmp_path / "home")
    largest, runs, total = footprint(tmp_path / "home")
    print(f"quick start: {runs} runs, the largest with {largest / 1024:.0f} KB of artifacts; "
          f"{total / 2**20:.1f} MB in all")
    assert largest < PER_TRIAL_LIMIT and total < TOTAL_LIMIT, (largest, total)
    text = README.read_text()
    assert any(line.startswith("verdict: ") for line in confirm.splitlines())  # it gives verdicts
    sample = block(STUDY_MARKER).splitlines()  # a sample of the study's lines
    if MACHINE_LINE.search(text).group(1) == this_machine():
        assert confirm == readme_block(text), (
            "the README's quick-start output is stale; run `python tests/test_readme.py --update`")
        for line in sample:
            assert line in study.splitlines(), f"README shows a line the study run did not print: {line}"
    else:  # see the module docstring
        assert_within_rerun(readme_block(text), confirm)
        printed = {NUMBER.sub("#", line) for line in study.splitlines()}
        for line in sample:
            assert NUMBER.sub("#", line) in printed, f"the study run printed no line like: {line}"


def test_a_readme_mean_outside_the_rerun_interval_fails_the_check():
    block = ("t: test accuracy (%), n=5 seeds\n"
             "classp   75.21 ± 3.61  80.19 ± 1.59 [79.01, 81.42]\n"
             "CLASSP vs EWC: classp - ewc = +11.49 points, 95% CI [+5.80, +17.18], n=5")
    assert_within_rerun(block, block.replace("75.21", "71.00"))  # within 75.21 ± 4.48
    for moved in (block.replace("75.21 ±", "70.00 ±"), block.replace("80.19 ±", "81.50 ±"),
                  block.replace("+11.49", "+4.00")):
        with pytest.raises(AssertionError, match="outside the rerun's 95% interval"):
            assert_within_rerun(moved, block)
    with pytest.raises(AssertionError, match="more than its numbers"):
        assert_within_rerun(block.replace("classp  ", "ewc     "), block)


def table1_from_logs(logs=TABLE1_LOGS, spec=REPO / "studies" / "paper-table1.toml") -> str:
    done = run_classp("reproduce", spec, "--from-logs", *logs)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_the_reproduced_tables_are_what_the_kept_outputs_give():
    # The reproduction runs (hours on a CPU, a GPU for full scale) are not rerun in CI; the
    # tables and their paired comparisons are rebuilt from their kept outputs by the
    # current code and must match the README.
    assert len(TABLE1_LOGS) == 6 and len(SIXTH_LOGS) == 2
    assert table1_from_logs() == block(TABLE1_MARKER), (
        "the shown Table 1 is stale; run `python tests/test_readme.py --update --tables-only`")
    assert table1_from_logs(SIXTH_LOGS) == block(SIXTH_MARKER), (
        "the shown 1/6-scale Table 1 is stale; run `python tests/test_readme.py --update --tables-only`")
    assert len(HSU_LOGS) == 3
    hsu = table1_from_logs(HSU_LOGS, HSU_SPEC)
    assert hsu == block(HSU_MARKER), (
        "the shown Hsu et al. table is stale; run `python tests/test_readme.py --update --tables-only`")
    assert "10 seed(s) (0 to 9)" in hsu and hsu.count(" ± ") >= 2 * 27  # every cell, n = 10


ROWS_MARKER = re.compile(r"<!-- rows of (\S+), checked by tests/test_readme.py -->")


def test_benchmark_rows_in_the_readme_are_lines_of_their_kept_outputs():
    """A benchmark's numbers are measured on a quiet machine, not in CI; the README shows
    lines of the output it kept, unedited."""
    found = [(path, match) for path in DOCUMENTS for match in ROWS_MARKER.finditer(path.read_text())]
    assert len(found) >= 4
    for path, match in found:
        kept = (REPO / match.group(1)).read_text().splitlines()
        for line in readme_block(path.read_text(), match.group(0)).splitlines():
            assert line in kept, f"{path.name}: {line!r} is not in {match.group(1)}"


KEPT_MARKER = re.compile(r"<!-- output kept in (\S+), checked by tests/test_readme.py -->")


def kept_output(path: str) -> str:
    return (REPO / path).read_text().rstrip("\n")


def test_kept_confirm_outputs_are_shown_whole_and_printed_by_todays_confirm():
    """Studies too long for CI (the field's benchmarks, the tuning protocols): the README
    shows the whole of what `classp study confirm` printed, kept under benchmarks/results/;
    each kept output opens as today's confirm does (the tuning protocol, then the table)."""
    found = [(path, match) for path in DOCUMENTS for match in KEPT_MARKER.finditer(path.read_text())]
    assert len(found) >= 7
    for path, match in found:
        kept = kept_output(match.group(1))
        assert readme_block(path.read_text(), match.group(0)) == kept, (
            f"{path.name}'s block for {match.group(1)} is stale; run "
            f"`python tests/test_readme.py --update --tables-only`")
        lines = kept.splitlines()
        assert lines[0].startswith("hyperparameters chosen by the ") and "tuning protocol" in lines[0]
        assert "test accuracy (%) after the last task, n=10 confirmation seeds" in lines[1]
        assert any(line.startswith("best baseline: ") for line in lines)


def test_the_readme_is_short_enough_to_read_in_five_minutes():
    lines = len(README.read_text().splitlines())
    assert lines < README_LINE_LIMIT, f"the README has {lines} lines; move details to docs/"


LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def headings(path: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)  # a '#' in code is no heading
    return {anchor(h) for h in re.findall(r"^#+ (.+)$", text, re.M)}


def test_every_link_between_the_readme_and_docs_leads_somewhere():
    """Pages moved out of the README: a link to a page or a heading that is not there fails."""
    for path in DOCUMENTS:
        for target in LINK.findall(path.read_text()):
            if target.startswith(("http://", "https://", "mailto:")):
                continue
            file, _, section = target.partition("#")
            linked = (path.parent / file).resolve() if file else path
            assert linked.exists(), f"{path.name} links to {target}, which does not exist"
            if section and linked.suffix == ".md":
                assert section in headings(linked), f"{path.name} links to {target}: no such heading"


if __name__ == "__main__" and sys.argv[1:2] == ["--update"]:
    for path in DOCUMENTS:
        for match in KEPT_MARKER.finditer(path.read_text()):
            replace_block(match.group(0), kept_output(match.group(1)))
    replace_block(TABLE1_MARKER, table1_from_logs())
    replace_block(SIXTH_MARKER, table1_from_logs(SIXTH_LOGS))
    replace_block(HSU_MARKER, table1_from_logs(HSU_LOGS, HSU_SPEC))
    if sys.argv[2:] == ["--tables-only"]:
        sys.exit(0)
    with tempfile.TemporaryDirectory() as folder:
        study, new = quick_start_output(Path(folder) / "home")
        largest, runs, total = footprint(Path(folder) / "home")
    print(f"quick start: {runs} runs, the largest with {largest / 1024:.0f} KB of artifacts; "
          f"{total / 2**20:.1f} MB in all")
    replace_block(MARKER, new)
    README.write_text(MACHINE_LINE.sub(f"The block above was printed on `{this_machine()}`",
                                       README.read_text(), 1))
    # the study sample: the block of the method named on its first line, as printed now
    method = block(STUDY_MARKER).split(":", 1)[0]
    lines = study.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith(method + ":"))
    end = next((i for i in range(first + 1, len(lines)) if not lines[i].startswith("  ")), len(lines))
    replace_block(STUDY_MARKER, "\n".join(line for line in lines[first:end] if "MLflow parent run" not in line))
    print(study, new, sep="\n")
