"""Helpers shared by the tests: free ports, real servers, the real command."""

from __future__ import annotations

import contextlib
import gzip
import os
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np


def write_idx(path: Path, array: np.ndarray, compress: bool = False) -> None:
    """Write an IDX file (the MNIST format): magic, dimensions, then uint8 data."""
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + b"".join(
        struct.pack(">I", d) for d in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    if compress:
        with gzip.open(str(path) + ".gz", "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)


def make_mnist_like(folder: Path, n_train: int = 200, n_test: int = 100, seed: int = 0,
                    compress: bool = False) -> None:
    """Images whose brightness encodes the label, so that a model can learn them."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = np.arange(n) % 10
        rng.shuffle(labels)
        images = rng.integers(0, 40, size=(n, 28, 28))
        for i, label in enumerate(labels):
            images[i, 4 + 2 * label: 6 + 2 * label, 4:24] = 250  # a bar at a label-given row
        write_idx(folder / f"{prefix}-images-idx3-ubyte", images, compress)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte", labels, compress)


REPO = Path(__file__).resolve().parents[1]
TINY_STUDY = REPO / "tests" / "fixtures" / "tiny-study.toml"
SCREENSHOTS = REPO / "test-artifacts"  # ignored by git (.gitignore): never in the tree
CHROMIUM = os.environ.get("CLASSP_CHROMIUM", "/usr/bin/chromium")


def chromium_path() -> str:
    """Chromium for the browser tests: a failure in CI when missing, a skip elsewhere."""
    import shutil

    import pytest

    path = shutil.which(CHROMIUM) or (CHROMIUM if Path(CHROMIUM).exists() else None)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"Chromium not found at {CHROMIUM}: install it as the README says "
                        f"(apt-get install chromium)")
        pytest.skip("Chromium is not installed (CI installs it)")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_http(url: str, timeout: float = 90.0, process=None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"{url} did not answer within {timeout} s")


def start_mlflow_server(folder: Path, backend_uri: str | None = None, port: int | None = None):
    port = port or free_port()
    backend_uri = backend_uri or f"sqlite:///{folder / 'server.db'}"
    log = open(folder / f"mlflow-server-{port}.log", "ab")
    # Light: no MLflow job runner (its huey consumers are 8 more busy processes that this
    # platform never uses), and its own process group, so that stopping it stops them all.
    process = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend_uri,
         "--artifacts-destination", str(folder / "artifacts"), "--host", "127.0.0.1",
         "--port", str(port), "--workers", "1"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{url}/health", process=process)
    except BaseException:
        stop_process(process)  # a failed start leaves no orphan behind
        raise
    return process, url


def stop_process(process) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def child_pids(pid: int) -> list[int]:
    """Processes whose parent is `pid`, from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def subprocess_env(**extra: str) -> dict[str, str]:
    """The environment for a child process, importing `classp` from this checkout (not
    from wherever an editable install last pointed)."""
    path = os.pathsep.join(p for p in (str(REPO / "platform"), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path, **extra}


def run_classp(*args, env=None, timeout=600):
    """The real command in a fresh interpreter."""
    return subprocess.run([sys.executable, "-m", "classp.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout,
                          env=subprocess_env(**(env or {})))


# ----------------------------------------------------------------------------------------
# A real PostgreSQL server on loopback (the distributed path).
# ----------------------------------------------------------------------------------------


def postgres_bin() -> Path | None:
    import glob
    import shutil

    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


class Postgres:
    """A throwaway PostgreSQL cluster: `initdb` in a temporary folder, password login on
    127.0.0.1, databases `optuna` and `mlflow`. As root, it runs as the `postgres` user
    (PostgreSQL refuses to run as root)."""

    def __init__(self, bin_dir: Path):
        import secrets
        import tempfile

        self.bin = bin_dir
        self.folder = Path(tempfile.mkdtemp(prefix="classp-pg-"))
        self.port = free_port()
        self.user, self.password = "classp", secrets.token_hex(12)
        self.as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self.as_postgres:
            import shutil

            shutil.chown(self.folder, "postgres")
        pwfile = self.folder / "pw"
        pwfile.write_text(self.password)
        if self.as_postgres:
            import shutil

            shutil.chown(pwfile, "postgres")
        self._run(self.bin / "initdb", "-D", self.folder / "data", "-U", self.user,
                  f"--pwfile={pwfile}", "-A", "scram-sha-256", "--no-sync")
        self.start()
        import psycopg

        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            for db in ("optuna", "mlflow"):
                conn.execute(f"CREATE DATABASE {db}")

    def _run(self, *args) -> None:
        subprocess.run([*self.as_postgres, *map(str, args)], check=True, capture_output=True,
                       cwd=self.folder)

    def url(self, database: str = "optuna", password: str | None = None) -> str:
        return (f"postgresql://{self.user}:{password or self.password}@127.0.0.1:{self.port}/"
                f"{database}")

    def start(self) -> None:
        self._run(self.bin / "pg_ctl", "-D", self.folder / "data", "-l", self.folder / "log",
                  "-w", "-o", f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 "
                  f"-c max_connections=200 -c fsync=off", "start")

    def stop(self) -> None:
        self._run(self.bin / "pg_ctl", "-D", self.folder / "data", "-m", "fast", "-w", "stop")


# ----------------------------------------------------------------------------------------
# The MLflow UI as a user browses it: headless Chromium, nothing outside the server.
# ----------------------------------------------------------------------------------------

BROWSER_ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync"]
GENAI_ONLY = ("Evaluation runs", "Judges", "Agent versions")  # the GenAI workspace's side bar


@contextlib.contextmanager
def offline_page(url: str, viewport=(1400, 900)):
    """A page in a fresh headless Chromium that reaches only the server at `url`: yields
    the page and the list of the requests it refused (expected to stay empty)."""
    from playwright.sync_api import sync_playwright

    SCREENSHOTS.mkdir(exist_ok=True)
    outside: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), args=BROWSER_ARGS)
        context = browser.new_context(viewport={"width": viewport[0], "height": viewport[1]})

        def only_the_server(request_route):
            if request_route.request.url.startswith(url):
                return request_route.continue_()
            outside.append(request_route.request.url)
            return request_route.abort()

        context.route("**/*", only_the_server)
        try:
            yield context.new_page(), outside
        finally:
            browser.close()


def browse_runs_as_a_user(url: str, experiment: str, parent_run: str, trial_run: str,
                          shot_name: str) -> list[str]:
    """From the server's front page, click the experiment, its study's parent run and one
    trial, in a fresh browser (no stored choice of workspace), as a new user would. Asserts
    each page is the model-training view; saves a screenshot of the runs list and of the
    trial; returns the requests that tried to leave the server (none expected)."""
    from playwright.sync_api import expect

    with offline_page(url) as (page, outside):
        page.goto(url + "/")
        page.get_by_text(experiment, exact=True).first.click(timeout=60_000)
        expect(page.get_by_text(parent_run, exact=True).first).to_be_visible(timeout=60_000)
        assert "/runs" in page.url, page.url  # the runs list, not the GenAI overview
        for text in GENAI_ONLY:
            assert page.get_by_text(text, exact=True).count() == 0, f"{text!r} on {page.url}"
        page.screenshot(path=str(SCREENSHOTS / f"{shot_name}-runs.png"))
        page.get_by_text(parent_run, exact=True).first.click()
        page.get_by_text(trial_run, exact=True).first.click(timeout=60_000)
        expect(page.get_by_role("heading", name=trial_run)).to_be_visible(timeout=60_000)
        for text in GENAI_ONLY:
            assert page.get_by_text(text, exact=True).count() == 0, f"{text!r} on {page.url}"
        page.screenshot(path=str(SCREENSHOTS / f"{shot_name}-trial.png"))
    return outside
