"""`classp ui`: the MLflow UI on the project's tracking store, started light and owned.

The MLflow server runs in a process group of its own, started light (MLflow 3's job
runner, a set of huey consumers this platform never uses, stays off). `classp ui` waits
until the server answers, saying so while it waits, and prints the URL then. SIGTERM,
SIGINT (Ctrl-C) or SIGHUP to `classp ui` stops the whole group: no server is left
answering on the port after `kill <pid>`.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

from classp.errors import UserError

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
START_TIMEOUT_S = 120


def server_command(uri: str, artifact_root: str, host: str, port: int) -> list[str]:
    return [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri,
            "--default-artifact-root", artifact_root, "--host", host, "--port", str(port),
            "--workers", "1", "--app-name", "classp"]


def check_port_free(host: str, port: int) -> None:
    """Whatever holds the port (another HTTP server, a plain socket) would either answer the
    health check in our server's place or make it exit after pages of its log: find out
    first, by binding the port ourselves, as the server is about to."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror:
        raise UserError(f"--host {host} is not a name or address this machine can listen on; "
                        f"give one of its addresses, e.g. 127.0.0.1") from None
    family, _, _, _, address = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        # As the server binds: SO_REUSEADDR, so a port in TIME_WAIT after a stop is free.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            raise UserError(f"port {port} on {host} is in use by another program ({exc.strerror}); "
                            f"stop it, or choose another port with --port") from None


def serve(uri: str, artifact_root: str, host: str, port: int, echo=None) -> int:
    """Run the server until it ends or a stop signal comes; return its exit status."""
    echo = echo or (lambda text: print(text, file=sys.stderr, flush=True))
    check_port_free(host, port)
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    server = subprocess.Popen(server_command(uri, artifact_root, host, port), env=env,
                              start_new_session=True)
    stopping = {"signal": None}

    def stop(signum, _frame):
        # Only a signal here: the main flow waits for the group and cleans up.
        stopping["signal"] = signum
        _kill_group(server.pid, signal.SIGTERM)

    previous = {s: signal.signal(s, stop) for s in STOP_SIGNALS}
    try:
        url = f"http://{host}:{port}"
        if not _wait_until_answering(server, url, echo, stopping):
            if stopping["signal"] is not None:
                return 0
            raise UserError(f"the MLflow server exited with status {server.returncode} before "
                            f"answering on {url}; is port {port} in use, or {host} not an "
                            f"address of this machine? choose another with --port or --host")
        echo(f"MLflow UI on {url} (store {uri}); Ctrl-C stops it")
        while server.poll() is None:
            try:
                server.wait()
            except InterruptedError:  # pragma: no cover - a signal mid-wait; loop again
                continue
        return 0 if stopping["signal"] is not None else server.returncode
    finally:
        _stop_group(server)
        for s, handler in previous.items():
            signal.signal(s, handler)


def _wait_until_answering(server, url: str, echo, stopping) -> bool:
    started = time.monotonic()
    said = 0.0
    while time.monotonic() - started < START_TIMEOUT_S:
        if server.poll() is not None or stopping["signal"] is not None:
            return False
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as reply:
                if reply.status == 200:
                    return True
        except (urllib.error.URLError, OSError):
            pass
        waited = time.monotonic() - started
        if waited - said >= 5:
            echo(f"starting the MLflow server on {url} ... {waited:.0f} s")
            said = waited
        time.sleep(0.25)
    _stop_group(server)
    raise UserError(f"the MLflow server did not answer on {url} within {START_TIMEOUT_S} s; "
                    f"it was stopped")


def _stop_group(server: subprocess.Popen) -> None:
    """SIGTERM to the server's whole process group, SIGKILL after 10 s."""
    if server.poll() is not None:
        _kill_group(server.pid, signal.SIGKILL)  # stragglers whose leader already exited
        return
    _kill_group(server.pid, signal.SIGTERM)
    try:
        server.wait(timeout=10)
    except subprocess.TimeoutExpired:
        _kill_group(server.pid, signal.SIGKILL)
        server.wait()
    _kill_group(server.pid, signal.SIGKILL)


def _kill_group(pgid: int, sig) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass
