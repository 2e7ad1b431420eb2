"""How fast `classp ui` answers and how much memory it holds, measured, not asserted.

Starts `classp ui` twice on a fresh `CLASSP_HOME` (the first start creates MLflow's
tables, the second finds them), times each until it prints its URL (it does so once the
server answers `/health`), and sums the resident memory of `classp ui` and every process
under it (shared pages count once per process, so this is an upper bound).

    python benchmarks/ui_start.py [--port 5123]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from support import child_pids  # noqa: E402  (the tests' /proc helper)


def process_tree(pid: int) -> list[int]:
    return [pid, *(p for child in child_pids(pid) for p in process_tree(child))]


def resident_mib(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def start_once(home: str, port: int) -> tuple[float, int, float]:
    env = {**os.environ, "CLASSP_HOME": home,
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO / "platform"), os.environ.get("PYTHONPATH")]))}
    started = time.monotonic()
    ui = subprocess.Popen([sys.executable, "-m", "classp.cli", "ui", "--port", str(port)],
                          stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env)
    try:
        for line in ui.stderr:
            if line.startswith("MLflow UI on "):
                break
        else:
            raise SystemExit(f"classp ui exited with {ui.wait()} before answering")
        seconds = time.monotonic() - started
        time.sleep(2)  # let the server settle
        pids = process_tree(ui.pid)
        return seconds, len(pids), resident_mib(pids)
    finally:
        ui.terminate()
        ui.wait(timeout=60)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=5123)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as home:
        for label in ("fresh store", "existing store"):
            seconds, n, mib = start_once(home, args.port)
            print(f"{label}: answered after {seconds:.1f} s; {n} processes (classp ui included), "
                  f"{mib:.0f} MiB resident in all")
    return 0


if __name__ == "__main__":
    sys.exit(main())
