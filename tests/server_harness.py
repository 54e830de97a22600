"""Starts a real radixlm server as a subprocess for end-to-end tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

import requests

STARTUP_TIMEOUT_S = 600


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """``python -m radixlm.launch_server`` on a free port; logs go to a temporary file."""

    def __init__(
        self, *args: str, env: dict[str, str] | None = None, new_session: bool = False
    ) -> None:
        """``new_session``: the server leads its own process group (for group-wide signals)."""
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_file = tempfile.NamedTemporaryFile(
            prefix="radixlm-server-", suffix=".log", delete=False
        )
        cmd = [sys.executable, "-m", "radixlm.launch_server", "--port", str(self.port), *args]
        self.proc = subprocess.Popen(
            cmd,
            stdout=self.log_file,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            start_new_session=new_session,
        )
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"server exited with {self.proc.returncode}:\n{self.log_text()[-4000:]}"
                )
            try:
                if requests.get(self.url + "/health_generate", timeout=30).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.5)
        self.stop()
        raise RuntimeError("server did not become ready:\n" + self.log_text()[-4000:])

    def log_text(self) -> str:
        with open(self.log_file.name, encoding="utf-8", errors="replace") as f:
            return f.read()

    def generate(self, body: dict, timeout: float = 300) -> requests.Response:
        return requests.post(self.url + "/generate", json=body, timeout=timeout)

    def state(self) -> dict:
        return requests.get(self.url + "/scheduler_state", timeout=60).json()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode
