"""``crm-predict serve`` is the server: SIGTERM to the pid its caller started stops BentoML and
frees the port (a child left running would hold it)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_serving_http import free_port, wait_healthy

pytestmark = pytest.mark.integration
CLI = Path(sys.executable).parent / "crm-predict"


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def test_sigterm_to_the_cli_stops_the_server_and_frees_the_port(tmp_path):
    port = free_port()
    env = {
        **os.environ,
        "CRM_PREDICT_DATA_DIR": str(tmp_path / "data"),
        "CRM_PREDICT_MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "CRM_PREDICT_API_TOKEN": "signal-test-token",
    }
    env.pop("CRM_PREDICT_DATABASE_URL", None)
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(CLI), "serve", "--port", str(port)], env=env, stdout=out, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        wait_healthy(proc, f"http://127.0.0.1:{port}", log)
        proc.send_signal(signal.SIGTERM)  # the CLI's own pid, not its process group
        stopped = time.monotonic() + 10
        while time.monotonic() < stopped and not _port_free(port):
            time.sleep(0.2)
        assert _port_free(port), f"port {port} still held 10 s after SIGTERM:\n{log.read_text()[-3000:]}"  # fmt: skip
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
