"""A tiny OpenAI-compatible server for the OpenAI backend's tests (records every request)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class FakeOpenAIServer:
    def __init__(self) -> None:
        self.requests: list[tuple[str, dict]] = []
        self.reply: Callable[[dict], str] = lambda body: "Hello there"
        # Characters of a scored text get logprob -0.1 when the text ends with one of these.
        self.favored: list[str] = []
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"
        threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        ).start()

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def _completion(self, body: dict) -> dict:
        usage = {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}
        if body["model"] and "messages" in body:
            message = {"role": "assistant", "content": self.reply(body)}
            choice = {"index": 0, "message": message, "finish_reason": "stop"}
            return {"id": "chat-1", "choices": [choice], "usage": usage}
        prompts = body["prompt"] if isinstance(body["prompt"], list) else [body["prompt"]]
        choices = []
        for index, prompt in enumerate(prompts):
            choice: dict[str, Any] = {"index": index, "finish_reason": "length"}
            if body.get("echo"):
                lp = -0.1 if any(prompt.endswith(f) for f in self.favored) else -2.0
                choice["text"] = prompt
                choice["logprobs"] = {
                    "tokens": list(prompt),
                    "token_logprobs": [None] + [lp] * (len(prompt) - 1),
                    "text_offset": list(range(len(prompt))),
                }
            else:
                choice["text"] = self.reply(body)
            choices.append(choice)
        return {"id": "cmpl-1", "choices": list(reversed(choices)), "usage": usage}

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append((self.path, body))
                out = server._completion(body)
                if body.get("stream"):
                    self.send_response(200)
                    self.send_header("Content-Type", "text/event-stream")
                    self.end_headers()
                    text = server.reply(body)
                    chat = "messages" in body
                    for i in range(0, len(text), 4):
                        piece = text[i : i + 4]
                        choice = (
                            {"index": 0, "delta": {"content": piece}}
                            if chat
                            else {
                                "index": 0,
                                "text": piece,
                            }
                        )
                        event = {"id": "s", "choices": [choice]}
                        self.wfile.write(b"data: " + json.dumps(event).encode() + b"\n\n")
                    self.wfile.write(b"data: [DONE]\n\n")
                    self.close_connection = True
                    return
                data = json.dumps(out).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return Handler
