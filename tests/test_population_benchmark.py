"""benchmarks/population.py's probe of a population runs, on a CPU at small scale, in every
form a GPU session would ask of it (float32 and bfloat16 autocast); its numbers on a CPU
say nothing about a GPU."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest

from support import REPO, subprocess_env

sys.path.insert(0, str(REPO / "benchmarks"))
import population as benchmark  # noqa: E402


@pytest.mark.parametrize("model", ["mlp", "paper-cnn"])
def test_the_member_probe_measures_a_population_in_float32_and_bfloat16(model):
    done = subprocess.run(
        [sys.executable, "-c", benchmark.MEMBER_PROBE, "permuted-digits", model, "32", "0.2", "",
         "2", "cpu", "bf16"], capture_output=True, text=True, timeout=600, env=subprocess_env())
    assert done.returncode == 0, done.stdout + done.stderr
    separate, together, bf16, peak_per_member = map(float, done.stdout.split())
    assert separate > 0 and together > 0 and bf16 > 0
    assert math.isnan(peak_per_member)  # GPU memory: on a GPU only
