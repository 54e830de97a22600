"""The scheduler process: one loop that batches requests, runs the model and emits tokens.

recv requests/aborts -> move compiled-grammar requests to waiting -> pick a batch (prefill of
waiting requests, longest-prefix-first, chunked under a token budget; else decode of all running)
-> forward -> sample under grammar masks -> jump-forward -> finish checks, radix-cache inserts
-> send token updates. On KV exhaustion the youngest running requests are retracted to the
waiting queue (their outputs are kept). A failing request finishes with an error; the loop lives.
"""

from __future__ import annotations

import logging
import time

import zmq

from radixlm.radix_cache import RadixCache
from radixlm.runtime import ipc
from radixlm.runtime.batch_runner import BatchRunner
from radixlm.runtime.grammar_manager import GrammarManager
from radixlm.runtime.io_struct import (
    AbortRequest,
    FinishReason,
    FlushCacheReply,
    FlushCacheRequest,
    GenerateRequest,
    ShutdownRequest,
    StateReply,
    StateRequest,
    TokenBatch,
)
from radixlm.runtime.kv_manager import KVManager
from radixlm.runtime.output_builder import OutputBuilder
from radixlm.runtime.overlap import InFlightDecode, can_overlap, finishes_by_length, launch_decode
from radixlm.runtime.process_utils import release_free_heap
from radixlm.runtime.request import Req
from radixlm.runtime.schedule_policy import PrefillBudget, order_waiting
from radixlm.runtime.scheduler_config import SchedulerConfig

logger = logging.getLogger(__name__)

MIN_NEW_TOKEN_RATIO = 0.1
# Defer a request whose prompt shares at least this many uncached tokens with one already in
# the prefill pass (SGLang: 32): computing the prefix once and reusing it beats computing it twice.
IN_PASS_PREFIX_THRESHOLD = 32
NEW_TOKEN_RATIO_DECAY = 0.002
RETRACT_NEW_TOKEN_RATIO_STEP = 0.1
DECODE_LOG_INTERVAL = 40  # decode passes between throughput log lines (SGLang's default)


class Scheduler:
    def __init__(
        self,
        config: SchedulerConfig,
        kv: KVManager,
        runner: BatchRunner,
        grammars: GrammarManager,
        outputs: OutputBuilder,
    ) -> None:
        self.config = config
        self.kv = kv
        self.runner = runner
        self.grammars = grammars
        self.outputs = outputs
        self.waiting: list[Req] = []
        self.running: list[Req] = []
        self.new_token_ratio = config.init_new_token_ratio
        self.stats = {
            "retractions": 0,
            "aborted": 0,
            "finished": 0,
            "prompt_tokens": 0,
            "cached_tokens": 0,
            "generation_tokens": 0,
            "forward_passes": 0,
            "grammar_compiles": 0,
            "grammar_compile_seconds": 0.0,
            "gen_throughput": 0.0,
        }
        # The overlapped decode pass whose tokens are not applied yet (runtime/overlap.py).
        self._in_flight: InFlightDecode | None = None
        self._decode_passes = 0
        self._decode_log_start = (time.monotonic(), 0)  # (time, generation_tokens) at last log

    # ---- inputs ---------------------------------------------------------------------------

    def handle(self, message) -> object | None:
        """Applies one inbound message; returns a reply to send for control messages."""
        if isinstance(message, GenerateRequest):
            self.add_request(message)
        elif isinstance(message, AbortRequest):
            self.abort(message.rid, message.abort_all)
        elif isinstance(message, FlushCacheRequest):
            return self.flush_cache(message.request_id)
        elif isinstance(message, StateRequest):
            return StateReply(request_id=message.request_id, state=self.state())
        return None

    def add_request(self, request: GenerateRequest) -> None:
        req = self.runner.new_req(request)
        self.stats["prompt_tokens"] += len(req.input_ids)
        error = self.config.validate(req)
        if error is not None:
            req.finish_with(FinishReason(type="abort", message=error, status_code=400))
            self.outputs.add(req)
            return
        if self.grammars.needs_grammar(req):
            try:
                self.grammars.submit(req)
            except Exception as exc:  # a broken compiler fails this request, not the loop
                logger.exception("grammar submission failed for %s", req.rid)
                reason = FinishReason(
                    type="abort", status_code=500, message=f"grammar compiler failed: {exc}"
                )
                self._finish(req, reason, keep_in_cache=False)
        else:
            self.waiting.append(req)

    def abort(self, rid: str, abort_all: bool = False) -> None:
        self.drain()  # the pass in flight first: its tokens belong to the outputs
        reason = FinishReason(type="abort", message="aborted by request", status_code=499)
        for req in self.grammars.remove(rid, abort_all):
            self._finish(req, reason, keep_in_cache=False)
        for queue in (self.waiting, self.running):
            for req in [r for r in queue if abort_all or r.rid == rid]:
                queue.remove(req)
                self._finish(req, reason, keep_in_cache=False)

    def flush_cache(self, request_id: str) -> FlushCacheReply:
        self.drain()
        if self.running or self.waiting or self.grammars.pending:
            return FlushCacheReply(
                request_id=request_id,
                success=False,
                message="cannot flush the cache while requests are running",
            )
        self.kv.allocator.free(self.kv.cache.reset())
        return FlushCacheReply(request_id=request_id, success=True)

    def state(self) -> dict:
        # No drain: a pass in flight counts its slots in kv_len, so the invariant holds as is.
        kv_state = self.kv.check(self.running + self.waiting)
        return {
            **kv_state,
            **self.stats,
            "num_running": len(self.running),
            "num_waiting": len(self.waiting),
            "num_grammar_queue": len(self.grammars.pending),
            "new_token_ratio": self.new_token_ratio,
        }

    # ---- one step ------------------------------------------------------------------------

    @property
    def busy(self) -> bool:
        return bool(
            self.running or self.waiting or self.grammars.pending or self._in_flight is not None
        )

    def step(self) -> None:
        ready = self.grammars.collect_ready(self._finish_failed_grammar)
        if ready:
            now = time.monotonic()
            self.stats["grammar_compiles"] += len(ready)
            self.stats["grammar_compile_seconds"] += sum(now - r.arrival for r in ready)
        self.waiting.extend(ready)
        chosen = self._schedule_prefill()
        if chosen:
            self.drain()
            self._run(chosen + self._decode_rows_to_mix(chosen), is_prefill=True)
        elif self.running and self.config.enable_overlap and self._decode_overlapped():
            pass
        else:
            self.drain()
            if self.running:
                self._prepare_decode()
            if self.running:
                self._run([(r, r.num_pending) for r in self.running], is_prefill=False)

    # ---- overlapped decode (runtime/overlap.py) -------------------------------------------

    def _decode_overlapped(self) -> bool:
        """Launches a decode pass of the running requests, then applies the previous pass's
        tokens while it runs. False (nothing done) if this step cannot overlap."""
        previous = self._in_flight
        rows = {} if previous is None else {id(r): i for i, r in enumerate(previous.reqs)}
        if not all(can_overlap(r) for r in self.running):
            return False
        context_len = self.config.context_len
        reqs, tokens = [], []
        for req in self.running:
            row = rows.get(id(req))
            if finishes_by_length(req, row is not None, context_len):
                continue  # the pass in flight ends it: nothing more to compute
            if row is not None:
                assert req.num_pending == 0, "a request in flight has no other pending token"
                tokens.append(-(row + 1))
            elif req.num_pending == 1:
                tokens.append(req.token_range(req.kv_len, req.kv_len + 1)[0])
            else:
                return False  # several pending tokens (jump-forward): the serial path runs them
            reqs.append(req)
        if not reqs or len(reqs) > self.kv.available():
            return False  # all finishing, or KV short: drain, then retract on the serial path
        self.new_token_ratio = max(
            MIN_NEW_TOKEN_RATIO, self.new_token_ratio - NEW_TOKEN_RATIO_DECAY
        )
        slots = self.kv.alloc(len(reqs))
        assert slots is not None, "available() counted these slots"
        self.kv.extend(reqs, [[slot] for slot in slots])
        prefix_lens = [r.kv_len for r in reqs]
        for req in reqs:
            req.kv_len += 1  # the pass writes this token's K/V; release() must free its slot
        self.stats["forward_passes"] += 1
        try:
            self._in_flight = launch_decode(self.runner, reqs, prefix_lens, slots, tokens, previous)
        except Exception as exc:
            # Like _run: a failed pass fails its requests (after the previous pass's tokens).
            self._in_flight = previous
            self.drain()
            self._fail_pass([(r, 1) for r in reqs if r.finish is None], exc)
            return True
        if previous is not None:
            self._apply(previous)
        self._log_batch([(r, 1) for r in reqs], is_prefill=False)
        return True

    def drain(self) -> None:
        """Applies the tokens of the pass in flight, if any (waits for the device)."""
        previous, self._in_flight = self._in_flight, None
        if previous is not None:
            self._apply(previous)

    def _apply(self, done: InFlightDecode) -> None:
        num_new = 0
        for req, token in zip(done.reqs, done.read(), strict=True):
            if req.finish is not None:
                continue  # ended by an earlier pass (or aborted): this token is past its end
            self.runner.append_sampled(req, token)
            num_new += 1
            if req.finish is not None:
                self.running.remove(req)
                self._finish(req, req.finish, keep_in_cache=True)
            else:
                self.outputs.add(req)
        self.stats["generation_tokens"] += num_new

    def _schedule_prefill(self) -> list[tuple[Req, int]]:
        if not self.waiting:
            return []
        max_new = self.config.max_running_requests - len(self.running)
        if max_new <= 0:
            return []
        reserved = sum(int(r.remaining_new_tokens * self.new_token_ratio) for r in self.running)
        budget = PrefillBudget(
            available_tokens=self.kv.available(),
            reserved_tokens=reserved,
            max_pass_tokens=self.config.chunk_size,
            max_new_requests=max_new,
            new_token_ratio=self.new_token_ratio,
        )
        ordered = order_waiting(self.waiting, self.config.schedule_policy, self.kv.prefix_len)
        # A chunked request already holds KV for part of its prompt: it always goes first.
        ordered.sort(key=lambda r: r.req_pool_idx is None)
        in_pass = RadixCache() if self.kv.cache_enabled else None
        chosen: list[tuple[Req, int]] = []
        for req in ordered:
            if in_pass is not None and req.req_pool_idx is None:
                if self._shares_prefix_with_pass(req, in_pass):
                    continue  # its prefix is being computed now: reuse it from the cache next pass
            if req.req_pool_idx is None and not self.kv.admit(req):
                break
            taken = budget.try_add(req, req.kv_len)
            if not taken:
                if req.kv_len == req.tree_prefix_len:
                    # Nothing computed yet: give the row and the prefix lock back until it fits.
                    self.kv.release(req, keep_in_cache=False)
                break
            chosen.append((req, taken))
            if taken < req.num_pending:
                break  # a chunked request ends the pass
        for req, _ in chosen:
            self.waiting.remove(req)
        return chosen

    def _shares_prefix_with_pass(self, req: Req, in_pass: RadixCache) -> bool:
        """True if an uncached prefix of ``req`` is already being computed in this pass."""
        ids = req.all_ids[: req.max_prefix_len]
        shared = len(in_pass.match_prefix(ids).slots)
        if shared - self.kv.prefix_len(req) >= IN_PASS_PREFIX_THRESHOLD:
            return True
        in_pass.insert(ids, list(range(len(ids))))
        return False

    def _decode_rows_to_mix(self, chosen: list[tuple[Req, int]]) -> list[tuple[Req, int]]:
        """The running requests' next tokens, when they decode inside this prefill pass: all of
        them or none (never retracting for it; the next decode pass does that if needed)."""
        if not self.config.enable_mixed_chunk or not self.running:
            return []
        rows = [(r, r.num_pending) for r in self.running if r.num_pending > 0]
        needed = sum(n for _, n in chosen) + sum(n for _, n in rows)
        return rows if needed <= self.kv.available() else []

    def _prepare_decode(self) -> None:
        """Makes room for one more pass of every running request, retracting if KV runs out."""
        self.new_token_ratio = max(
            MIN_NEW_TOKEN_RATIO, self.new_token_ratio - NEW_TOKEN_RATIO_DECAY
        )
        needed = sum(r.num_pending for r in self.running)
        while needed > self.kv.available() and len(self.running) > 1:
            victim = max(self.running, key=lambda r: (r.arrival, r.rid))  # the youngest
            self.running.remove(victim)
            needed -= victim.num_pending
            self._retract(victim)
        if needed > self.kv.available() and self.running:
            req = self.running.pop()
            self._finish(
                req,
                FinishReason(
                    type="abort", status_code=503, message="KV cache too small for this request"
                ),
                False,
            )

    def _retract(self, req: Req) -> None:
        self.kv.release(req, keep_in_cache=True)
        req.retractions += 1
        self.stats["retractions"] += 1
        self.waiting.append(req)
        self.new_token_ratio = min(1.0, self.new_token_ratio + RETRACT_NEW_TOKEN_RATIO_STEP)
        logger.info(
            "KV cache full: retracted request %s (%d tokens kept as output)",
            req.rid,
            len(req.output_ids),
        )

    def _run(self, chosen: list[tuple[Req, int]], is_prefill: bool) -> None:
        slots = self.kv.alloc(sum(n for _, n in chosen))
        if slots is None:
            assert is_prefill, "_prepare_decode guarantees room for a decode pass"
            # Admission estimates were off: requeue and retry after the running requests move on.
            self.waiting.extend(req for req, _ in chosen if req not in self.running)
            return
        per_req, offset = [], 0
        for _, n in chosen:
            per_req.append(slots[offset : offset + n])
            offset += n
        self.kv.extend([req for req, _ in chosen], per_req)
        self.stats["forward_passes"] += 1
        num_output_before = sum(len(req.output_ids) for req, _ in chosen)
        kv_lens_after = [req.kv_len + n for req, n in chosen]
        try:
            self.runner.run(chosen, slots)
        except Exception as exc:  # a bad batch fails its requests, never the loop
            # The pass's slots are written into each request's row whether or not the runner got
            # as far as counting them (it fails in the forward or in sampling): release them all,
            # and nothing past them.
            for (req, _), kv_len in zip(chosen, kv_lens_after, strict=True):
                req.kv_len = kv_len
            self._fail_pass(chosen, exc)
            return
        self.stats["generation_tokens"] += (
            sum(len(req.output_ids) for req, _ in chosen) - num_output_before
        )
        self._log_batch(chosen, is_prefill)
        for req, _ in chosen:
            if req.finish is not None:
                if req in self.running:
                    self.running.remove(req)
                self._finish(req, req.finish, keep_in_cache=True)
            elif is_prefill and req not in self.running:
                if req.in_prefill:
                    self.waiting.insert(0, req)  # a chunked request continues next pass
                else:
                    self.kv.cache_prompt(req)
                    self.running.append(req)
            self.outputs.add(req)

    def _fail_pass(self, chosen: list[tuple[Req, int]], exc: Exception) -> None:
        logger.exception("forward pass failed")
        message = f"internal error: {exc}"
        for req, _ in chosen:
            if req in self.running:
                self.running.remove(req)
            self._finish(req, FinishReason(type="abort", status_code=500, message=message), False)

    def _log_batch(self, chosen: list[tuple[Req, int]], is_prefill: bool) -> None:
        """SGLang's periodic lines ("Prefill batch. ..." / "Decode batch. ...") users grep."""
        total = self.kv.pool_size
        used = total - self.kv.allocator.available_size() - self.kv.cache.evictable_size()
        if is_prefill:
            new = [(req, n) for req, n in chosen if req not in self.running]  # not mixed-in rows
            logger.info(
                "Prefill batch. #new-seq: %d, #new-token: %d, #cached-token: %d, "
                "token usage: %.2f, #running-req: %d, #queue-req: %d",
                len(new),
                sum(n for _, n in new),
                sum(req.cached_tokens for req, _ in new),
                used / total,
                len(self.running),
                len(self.waiting),
            )
            return
        self._decode_passes += 1
        if self._decode_passes % DECODE_LOG_INTERVAL:
            return
        start_time, start_tokens = self._decode_log_start
        now, tokens = time.monotonic(), self.stats["generation_tokens"]
        self.stats["gen_throughput"] = (tokens - start_tokens) / max(now - start_time, 1e-9)
        self._decode_log_start = (now, tokens)
        logger.info(
            "Decode batch. #running-req: %d, #token: %d, token usage: %.2f, "
            "gen throughput (token/s): %.2f, #queue-req: %d",
            len(self.running),
            used,
            used / total,
            self.stats["gen_throughput"],
            len(self.waiting),
        )

    def _finish(self, req: Req, reason: FinishReason, keep_in_cache: bool) -> None:
        req.finish_with(reason)
        if req.finish.type == "abort":
            self.stats["aborted"] += 1
        else:
            self.stats["finished"] += 1
            self.stats["cached_tokens"] += req.cached_tokens
        self.kv.release(req, keep_in_cache=keep_in_cache and req.finish.type != "abort")
        self.grammars.discard(req)
        self.outputs.add(req)

    def _finish_failed_grammar(self, req: Req, message: str) -> None:
        self._finish(req, FinishReason(type="abort", message=message, status_code=400), False)


# Memory freed by passes goes back to the OS once the scheduler has been idle this long; not at
# every pause, or each burst's first pass would fault the same pages in again (a trim of a
# gigabyte takes ~170 ms, then the pages are zero-filled anew).
IDLE_RELEASE_AFTER_S = 5.0


def run_scheduler_loop(scheduler: Scheduler, inbox: ipc.Channel, outbox: ipc.Channel) -> None:
    """Blocks on the inbox when idle; drains it without blocking between passes."""
    poller = zmq.Poller()
    poller.register(inbox.socket, zmq.POLLIN)
    last_check = time.monotonic()
    idle_since: float | None = None  # None while busy
    heap_released = False
    shutdown_deadline: float | None = None
    while True:
        if scheduler.busy:
            timeout_ms = 0 if (scheduler.running or scheduler.waiting) else 5
        elif idle_since is not None and not heap_released:
            wait_s = idle_since + IDLE_RELEASE_AFTER_S - time.monotonic()
            timeout_ms = max(0, int(wait_s * 1000) + 1)
        else:
            timeout_ms = None
        while poller.poll(timeout_ms):
            message = inbox.recv_valid()
            if isinstance(message, ShutdownRequest):
                shutdown_deadline = time.monotonic() + message.timeout_s
                continue
            reply = scheduler.handle(message)
            if reply is not None:
                outbox.send(reply)
            timeout_ms = 0
        if shutdown_deadline is not None and (
            not scheduler.busy or time.monotonic() >= shutdown_deadline
        ):
            scheduler.abort("", abort_all=True)
            _flush(scheduler, outbox)
            return
        scheduler.step()
        _flush(scheduler, outbox)
        now = time.monotonic()
        if scheduler.busy:
            idle_since, heap_released = None, False
            continue
        if idle_since is None:
            idle_since = now
        if now - last_check > 1.0:
            state = scheduler.kv.check([])
            if not state["ok"]:
                logger.error("KV pool invariant broken while idle: %s", state)
            last_check = now
        if not heap_released and now - idle_since >= IDLE_RELEASE_AFTER_S:
            released = release_free_heap()
            heap_released = True
            if released >= 1 << 20:
                logger.info("Idle: returned %d MB of freed memory to the OS", released >> 20)


def _flush(scheduler: Scheduler, outbox: ipc.Channel) -> None:
    updates = scheduler.outputs.drain()
    if updates:
        outbox.send(TokenBatch(updates=updates))
