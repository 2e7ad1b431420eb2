"""`classp ui`: a real MLflow server that `classp ui` starts, announces and stops with
itself, whichever stop signal it gets."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from support import child_pids, free_port, subprocess_env


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _port_answers(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT],
                         ids=["SIGTERM", "SIGHUP", "SIGINT"])
def test_a_stop_signal_to_classp_ui_stops_its_server_and_frees_the_port(tmp_path, stop):
    port = free_port()
    ui = subprocess.Popen([sys.executable, "-m", "classp.cli", "ui", "--port", str(port)],
                          stderr=subprocess.PIPE, text=True,
                          env=subprocess_env(CLASSP_HOME=str(tmp_path / "home")))
    try:
        lines = []
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            line = ui.stderr.readline()
            lines.append(line)
            if line.startswith("MLflow UI on ") or not line:
                break
        assert lines[-1].startswith(f"MLflow UI on http://127.0.0.1:{port}"), lines
        assert _port_answers(port)
        servers = child_pids(ui.pid)
        assert servers, "classp ui started no server"
        groups = {os.getpgid(p) for p in servers}
        assert ui.pid not in groups  # the server has a group of its own

        ui.send_signal(stop)
        assert ui.wait(timeout=60) == 0
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and (any(map(_group_alive, groups)) or _port_answers(port)):
            time.sleep(0.2)
        assert not any(map(_group_alive, groups)), "a process of the server's group is left"
        assert not _port_answers(port), f"something still answers on port {port}"
    finally:
        if ui.poll() is None:
            ui.kill()
        for p in child_pids(ui.pid):
            os.killpg(os.getpgid(p), signal.SIGKILL)


def test_a_port_held_by_a_plain_socket_is_one_line_before_any_server_starts(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = subprocess.run([sys.executable, "-m", "classp.cli", "ui", "--port", str(port)],
                              capture_output=True, text=True, timeout=180,
                              env=subprocess_env(CLASSP_HOME=str(tmp_path / "home")))
    assert done.returncode == 2
    # one line: no page of the MLflow server's log before it
    assert done.stderr.strip().splitlines() == [
        f"classp: error: port {port} on 127.0.0.1 is in use by another program (Address already "
        f"in use); stop it, or choose another port with --port"]


def test_another_http_server_on_the_port_is_not_taken_for_ours(tmp_path):
    """It would answer the health check; before, `classp ui` reported it as its own UI."""
    import http.server
    import threading

    server = http.server.HTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    port = server.server_address[1]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        done = subprocess.run([sys.executable, "-m", "classp.cli", "ui", "--port", str(port)],
                              capture_output=True, text=True, timeout=180,
                              env=subprocess_env(CLASSP_HOME=str(tmp_path / "home")))
    finally:
        server.shutdown()
        server.server_close()
    assert done.returncode == 2 and "MLflow UI on" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith(f"classp: error: port {port} on 127.0.0.1 is in use")


@pytest.mark.parametrize("port", ["99999", "0"])
def test_a_port_out_of_range_is_one_line(tmp_path, port):
    done = subprocess.run([sys.executable, "-m", "classp.cli", "ui", "--port", port],
                          capture_output=True, text=True, timeout=120,
                          env=subprocess_env(CLASSP_HOME=str(tmp_path / "home")))
    assert done.returncode == 2
    assert done.stderr.strip() == f"classp: error: --port must be between 1 and 65535, got {port}"
