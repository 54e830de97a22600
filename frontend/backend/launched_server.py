"""`Runtime`: launch a radixlm server as a subprocess and use it as a backend."""

from __future__ import annotations

import atexit
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any

from radixlm.backend.http_client import BackendError, HttpClient
from radixlm.backend.runtime_endpoint import RuntimeEndpoint

# How long a server gets between SIGTERM and SIGKILL on shutdown.
SHUTDOWN_GRACE_S = 10.0
HEALTH_POLL_INTERVAL_S = 0.5


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def server_flags(server_args: dict[str, Any]) -> list[str]:
    """`max_total_tokens=8192` -> `--max-total-tokens 8192`; True -> a bare flag; None/False -> none."""
    flags: list[str] = []
    for key, value in server_args.items():
        if value is None or value is False:
            continue
        flag = "--" + key.replace("_", "-")
        if value is True:
            flags.append(flag)
        elif isinstance(value, (list, tuple)):
            flags += [flag, *map(str, value)]
        else:
            flags += [flag, str(value)]
    return flags


class Runtime:
    """Runs `python -m radixlm.launch_server` with SGLang-style flags from keyword arguments.

    `model_path=None` serves the embedded default model. Blocks until GET /health_generate
    answers 200 (or the process dies, or `launch_timeout_s` passes). `.endpoint` is the
    `RuntimeEndpoint`; a `Runtime` can also be passed wherever a backend is expected.
    """

    def __init__(
        self,
        model_path: str | None = None,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        api_key: str | None = None,
        chat_template_name: str | None = None,
        launch_timeout_s: float = 600.0,
        **server_args: Any,
    ) -> None:
        self.port = port or free_port(host)
        self.url = f"http://{host}:{self.port}"
        args = {"model_path": model_path, "host": host, "port": self.port, "api_key": api_key}
        command = [sys.executable, "-m", "radixlm.launch_server", *server_flags(args | server_args)]
        self.log_file = tempfile.NamedTemporaryFile(prefix="radixlm-server-", suffix=".log")
        # A session of its own, so that a stuck server can be killed with all its children.
        self.process = subprocess.Popen(
            command, stdout=self.log_file, stderr=subprocess.STDOUT, start_new_session=True
        )
        atexit.register(self.shutdown)
        try:
            self._wait_until_healthy(HttpClient(self.url, api_key=api_key), launch_timeout_s)
            self.endpoint = RuntimeEndpoint(
                self.url, api_key=api_key, chat_template_name=chat_template_name
            )
        except BaseException:
            self.shutdown()
            raise

    def _wait_until_healthy(self, client: HttpClient, timeout_s: float) -> None:
        import requests

        deadline = time.monotonic() + timeout_s
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"the server exited with code {self.process.returncode} while starting:\n"
                    + self.log_tail()
                )
            try:
                client.get("/health_generate")
                return
            except (BackendError, requests.RequestException) as exc:
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"the server at {self.url} was not healthy after {timeout_s:.0f} s "
                        f"(last error: {exc}):\n" + self.log_tail()
                    ) from exc
            time.sleep(HEALTH_POLL_INTERVAL_S)

    def log_tail(self, num_chars: int = 4000) -> str:
        with open(self.log_file.name, errors="replace") as f:
            return f.read()[-num_chars:]

    def shutdown(self) -> None:
        """Stops the server: SIGTERM lets it drain; its group gets SIGKILL after the grace."""
        atexit.unregister(self.shutdown)
        if self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(SHUTDOWN_GRACE_S)
        except subprocess.TimeoutExpired:
            # The whole group: the server's own children (scheduler, detokenizer) too.
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    def __repr__(self) -> str:
        return f"Runtime({self.url!r})"
