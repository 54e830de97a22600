"""Fixtures for the benchmark client tests: the client module, a tiny real tokenizer, and a small
local server speaking the native and OpenAI streaming protocols with an exact prefix cache."""

from __future__ import annotations

import importlib.util
import json
import random
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

BENCH_SERVING = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_serving.py"
WORDS = (
    "the quick brown fox jumps over lazy dog radix cache prefix token batch serving model "
    "request stream latency throughput scheduler kernel memory decode prefill sampler grammar"
).split()


@pytest.fixture(scope="session")
def bench_serving() -> ModuleType:
    # benchmarks/ is a folder of scripts, not a package: load the file itself.
    spec = importlib.util.spec_from_file_location("bench_serving", BENCH_SERVING)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_serving"] = module  # dataclasses resolve their module through sys.modules
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def tokenizer() -> Any:
    """A byte-level BPE (the GPT-2 / SmolLM2 scheme) trained in-process on a small word corpus."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    rng = random.Random(0)
    corpus = [" ".join(rng.choice(WORDS) for _ in range(40)) for _ in range(300)]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=500,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=["<eos>"],
    )
    tok.train_from_iterator(corpus, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>")


class FakeServer:
    """Streams `max_new_tokens` words per request, one or two tokens per event, and reports
    `cached_tokens` as the longest common prefix with any prompt it has finished before (an exact
    prefix cache), so the client's hit-rate arithmetic can be checked end to end."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.lock = threading.Lock()
        self.finished_prompts: list[list[int]] = []
        self.payloads: list[tuple[str, dict]] = []
        self.max_in_flight = 0
        self._in_flight = 0

    def prompt_ids(self, path: str, body: dict) -> list[int]:
        if path == "/v1/chat/completions":
            return self.tokenizer.encode(body["messages"][-1]["content"], add_special_tokens=False)
        prompt = body.get("input_ids", body.get("text", body.get("prompt")))
        if isinstance(prompt, str):
            return self.tokenizer.encode(prompt, add_special_tokens=False)
        return list(prompt)

    def cached_len(self, ids: list[int]) -> int:
        best = 0
        for seen in self.finished_prompts:
            n = 0
            while n < min(len(seen), len(ids)) and seen[n] == ids[n]:
                n += 1
            best = max(best, n)
        return best


def _handler(server: FakeServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:  # keep pytest output clean
            pass

        def _json(self, obj: dict) -> None:
            data = json.dumps(obj).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            assert self.path == "/v1/models", self.path
            self._json({"data": [{"id": "fake-model"}]})

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])) or b"{}")
            if self.path == "/flush_cache":
                with server.lock:
                    server.finished_prompts.clear()
                self._json({})
                return
            ids = server.prompt_ids(self.path, body)
            with server.lock:
                server.payloads.append((self.path, body))
                cached = server.cached_len(ids)
                server._in_flight += 1
                server.max_in_flight = max(server.max_in_flight, server._in_flight)
            try:
                self._stream(body, ids, cached)
            finally:
                with server.lock:
                    server._in_flight -= 1
                    server.finished_prompts.append(ids)

        def _stream(self, body: dict, ids: list[int], cached: int) -> None:
            native = self.path == "/generate"
            num_out = body["sampling_params"]["max_new_tokens"] if native else body["max_tokens"]
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()  # HTTP/1.0: the body ends when the connection closes
            words = [WORDS[(len(ids) + i) % len(WORDS)] for i in range(num_out)]
            # Token counts per event: 1, then alternately 2 and 1 (exercises the ITL spread).
            ends, n = [], 0
            while n < num_out:
                n = min(num_out, n + (1 if not ends or len(ends) % 2 == 0 else 2))
                ends.append(n)
            prev = 0
            for end in ends:
                time.sleep(0.002)
                if native:
                    event = {
                        "text": "".join(f" {w}" for w in words[:end]),
                        "meta_info": {
                            "prompt_tokens": len(ids),
                            "completion_tokens": end,
                            "cached_tokens": cached,
                        },
                    }
                else:
                    delta = "".join(f" {w}" for w in words[prev:end])
                    chat = self.path == "/v1/chat/completions"
                    choice = {"delta": {"content": delta}} if chat else {"text": delta}
                    event = {"choices": [choice]}
                prev = end
                self.wfile.write(f"data: {json.dumps(event)}\n\n".encode())
                self.wfile.flush()
            if not native:
                usage = {
                    "prompt_tokens": len(ids),
                    "completion_tokens": num_out,
                    "prompt_tokens_details": {"cached_tokens": cached},
                }
                self.wfile.write(
                    f"data: {json.dumps({'choices': [], 'usage': usage})}\n\n".encode()
                )
            self.wfile.write(b"data: [DONE]\n\n")

    return Handler


@pytest.fixture()
def fake_server(tokenizer: Any) -> Iterator[tuple[FakeServer, str]]:
    state = FakeServer(tokenizer)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield state, f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()
