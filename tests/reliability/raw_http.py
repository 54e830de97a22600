"""A client that can walk away: raw-socket HTTP requests, to disconnect at a chosen moment."""

from __future__ import annotations

import json
import socket
from urllib.parse import urlparse


class RawRequest:
    """Sends one POST with a JSON body and keeps the socket, so a test can read part of the
    answer and then close the connection like a client that gave up."""

    def __init__(self, url: str, path: str, body: dict, headers: dict[str, str]) -> None:
        parsed = urlparse(url)
        self.sock = socket.create_connection((parsed.hostname, parsed.port), timeout=120)
        payload = json.dumps(body).encode()
        head = [
            f"POST {path} HTTP/1.1",
            f"Host: {parsed.hostname}:{parsed.port}",
            "Content-Type: application/json",
            f"Content-Length: {len(payload)}",
            *(f"{k}: {v}" for k, v in headers.items()),
        ]
        self.sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + payload)
        self.buffer = b""

    def read_events(self, count: int) -> list[bytes]:
        """Blocks until ``count`` SSE ``data:`` events have arrived; returns them."""
        while self.buffer.count(b"\ndata: ") + self.buffer.startswith(b"data: ") < count:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"server closed the stream early: {self.buffer[-500:]!r}")
            self.buffer += chunk
        return [line for line in self.buffer.split(b"\n") if line.startswith(b"data: ")]

    def read_to_done(self) -> list[dict]:
        """Reads the stream to its ``data: [DONE]``; returns every JSON event."""
        while b"data: [DONE]" not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"stream closed without [DONE]: {self.buffer[-500:]!r}")
            self.buffer += chunk
        lines = [line for line in self.buffer.split(b"\n") if line.startswith(b"data: {")]
        return [json.loads(line[6:]) for line in lines]

    def read_status(self) -> int:
        while b"\r\n" not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("server closed the connection before a status line")
            self.buffer += chunk
        return int(self.buffer.split(b" ", 2)[1])

    def close(self) -> None:
        self.sock.close()
