"""A tiny native-API server for frontend tests: records every request, answers by simple rules.

It speaks the real wire protocol over real HTTP (so the client's transport is exercised too),
with a "model" that is a plain function: one token per character, completions chosen by the
test, stop strings trimmed like a real server does, and logprobs that favour configured texts.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

DEFAULT_MODEL_PATH = "HuggingFaceTB/SmolLM2-135M-Instruct"
FAVORED_LOGPROB = -0.1
PLAIN_LOGPROB = -2.0


class FakeNativeServer:
    def __init__(self, model_path: str = DEFAULT_MODEL_PATH) -> None:
        self.model_path = model_path
        self.model_info: dict[str, Any] = {"model_path": model_path}
        # (method, path, JSON body or None), in arrival order.
        self.requests: list[tuple[str, str, Any]] = []
        # The Authorization header of each request (None when absent), in the same order.
        self.authorizations: list[str | None] = []
        self._lock = threading.Lock()
        # The "model": maps (prompt text, sampling params) to the full untrimmed completion.
        self.complete: Callable[[str, dict], str] = lambda text, params: "ok"
        # Texts whose characters get a high logprob when a scored text ends with them.
        self.favored: list[str] = []
        # Returns an (HTTP status, JSON body) to fail a /generate request, or None.
        self.fail: Callable[[dict], tuple[int, Any] | None] = lambda body: None
        self.delay_s = 0.0
        self.stream_chunk_chars = 3
        # Pause between SSE events, so a test can rely on the client seeing them one by one.
        self.stream_chunk_delay_s = 0.0
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    # ---- what tests read ----

    def generate_bodies(self) -> list[dict]:
        with self._lock:
            return [body for _, path, body in self.requests if path == "/generate"]

    def paths(self) -> list[str]:
        with self._lock:
            return [path for _, path, _ in self.requests]

    def clear(self) -> None:
        with self._lock:
            self.requests.clear()

    # ---- the fake model ----

    def _one(self, text: str, body: dict) -> dict:
        params = body.get("sampling_params") or {}
        max_new_tokens = params.get("max_new_tokens", 128)
        output = "" if max_new_tokens == 0 else self.complete(text, params)
        finish_reason: dict[str, Any] = {"type": "length", "length": max_new_tokens}
        stops = params.get("stop") or []
        for stop in [stops] if isinstance(stops, str) else stops:
            cut = output.find(stop)
            if cut >= 0:
                output, finish_reason = output[:cut], {"type": "stop", "matched": stop}
        output = output[:max_new_tokens]
        meta: dict[str, Any] = {
            "id": uuid.uuid4().hex,
            "prompt_tokens": len(text),
            "completion_tokens": len(output),
            "cached_tokens": 0,
            "finish_reason": finish_reason,
            "e2e_latency": 0.0,
        }
        if body.get("return_logprob"):
            start = max(body.get("logprob_start_len", -1), 0)
            entries = [[self._logprob(text), ord(c), c] for c in text[start:]]
            if entries:
                entries[0][0] = None  # the server's first input entry is always null
            meta["input_token_logprobs"] = entries
            meta["output_token_logprobs"] = [[-0.5, ord(c), c] for c in output]
        return {"text": output, "output_ids": [ord(c) for c in output], "meta_info": meta}

    def _logprob(self, text: str) -> float:
        return FAVORED_LOGPROB if any(text.endswith(f) for f in self.favored) else PLAIN_LOGPROB

    def _generate(self, body: dict) -> Any:
        if "input_ids" in body:
            # Scoring token ids with no prompt: every entry plain, the first null.
            return [
                {
                    "text": "",
                    "meta_info": {
                        "prompt_tokens": len(ids),
                        "input_token_logprobs": [
                            [None if i == 0 else PLAIN_LOGPROB, t, None] for i, t in enumerate(ids)
                        ],
                    },
                }
                for ids in body["input_ids"]
            ]
        if isinstance(body["text"], list):
            return [self._one(text, body) for text in body["text"]]
        return self._one(body["text"], body)

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, status: int, payload: Any) -> None:
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _record(self, method: str) -> Any:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                with server._lock:
                    server.requests.append((method, self.path, body))
                    server.authorizations.append(self.headers.get("Authorization"))
                return body

            def do_GET(self) -> None:
                self._record("GET")
                if self.path == "/get_model_info":
                    self._send(200, server.model_info)
                elif self.path in ("/get_server_info", "/server_info"):
                    self._send(200, {"model_path": server.model_path, "fake": True})
                elif self.path in ("/health", "/health_generate"):
                    self._send(200, {})
                else:
                    self._send(404, {"detail": "Not Found"})

            def do_POST(self) -> None:
                body = self._record("POST")
                if self.path == "/flush_cache":
                    self._send(200, b"Cache flushed.")
                elif self.path == "/concate_and_append_request":
                    self._send(200, {})
                elif self.path == "/generate":
                    time.sleep(server.delay_s)
                    failure = server.fail(body)
                    if failure is not None:
                        self._send(*failure)
                    elif body.get("stream"):
                        self._stream(server._generate(body))
                    else:
                        self._send(200, server._generate(body))
                else:
                    self._send(404, {"detail": "Not Found"})

            def _stream(self, result: dict) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                text = result["text"]
                step = server.stream_chunk_chars
                for end in list(range(step, len(text), step)) + [len(text)]:
                    time.sleep(server.stream_chunk_delay_s)
                    event = {"text": text[:end], "meta_info": result["meta_info"] | {"n": end}}
                    self.wfile.write(b"data: " + json.dumps(event).encode() + b"\n\n")
                    self.wfile.flush()
                self.wfile.write(b"data: [DONE]\n\n")
                self.close_connection = True

        return Handler
