"""GrammarCompiler: compile specs off the scheduler loop, with a time limit and an LRU cache.

One dispatcher thread feeds jobs to up to ``max_workers`` worker processes (compile_worker.py).
A job running past ``timeout_s`` has its worker killed (a fresh one is started for the next job)
and its future fails with GrammarError, so a pathological spec costs at most ``timeout_s`` of one
worker and never blocks shutdown. Results, errors included, are cached per spec: repeating a
pathological spec does not burn another ``timeout_s``.
"""

from __future__ import annotations

import collections
import multiprocessing
import queue
import threading
import time
from concurrent.futures import Future
from multiprocessing.connection import wait

from radixlm.constrained.backend import CompiledGrammar, GrammarBackend
from radixlm.constrained.compile_worker import worker_main
from radixlm.constrained.spec import GrammarError, GrammarSpec

_SPAWN = multiprocessing.get_context("spawn")  # fork is unsafe in a threaded scheduler


class _Worker:
    """One compile process; ``job`` is (spec, future, deadline) while it compiles."""

    def __init__(self, backend: GrammarBackend) -> None:
        self.conn, child = _SPAWN.Pipe()
        self.process = _SPAWN.Process(
            target=worker_main,
            args=(child, backend.name, backend.vocab, backend.compact_json),
            daemon=True,
            name="radixlm-grammar-compile",
        )
        self.process.start()
        child.close()
        self.ready = False
        self.job: tuple[GrammarSpec, Future, float] | None = None

    def kill(self) -> None:
        self.process.kill()
        self.process.join(timeout=5)
        self.conn.close()


class GrammarCompiler:
    def __init__(
        self,
        backend: GrammarBackend,
        *,
        max_workers: int = 1,
        timeout_s: float = 10.0,
        cache_size: int = 256,
    ) -> None:
        assert max_workers >= 1 and timeout_s > 0 and cache_size >= 1
        self.backend = backend
        self.max_workers = max_workers
        self.timeout_s = timeout_s
        self.cache_size = cache_size
        self.num_cache_hits = 0
        self._cache: collections.OrderedDict[GrammarSpec, Future] = collections.OrderedDict()
        self._lock = threading.Lock()
        self._jobs: queue.SimpleQueue[tuple[GrammarSpec, Future]] = queue.SimpleQueue()
        self._wake_recv, self._wake_send = _SPAWN.Pipe(duplex=False)
        self._workers: list[_Worker] = []
        self._closed = False
        self._thread = threading.Thread(target=self._dispatch, daemon=True, name="grammar-compiler")
        self._thread.start()

    def submit(self, spec: GrammarSpec) -> Future[CompiledGrammar]:
        """A future resolving to the compiled grammar, or raising GrammarError."""
        with self._lock:
            if self._closed:
                raise RuntimeError("GrammarCompiler is shut down")
            future = self._cache.get(spec)
            if future is not None:
                self._cache.move_to_end(spec)
                self.num_cache_hits += 1
                return future
            future = Future()
            self._cache[spec] = future
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)  # waiters keep their own reference
            self._jobs.put((spec, future))
            self._wake_send.send_bytes(b"j")
        return future

    def shutdown(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._wake_send.send_bytes(b"q")
        self._thread.join(timeout=10)

    # --- dispatcher thread -------------------------------------------------------------------

    def _dispatch(self) -> None:
        pending: collections.deque[tuple[GrammarSpec, Future]] = collections.deque()
        try:
            while not self._closed:
                self._drain(pending)
                self._assign(pending)
                deadlines = [w.job[2] for w in self._workers if w.job is not None]
                timeout = max(0.0, min(deadlines) - time.monotonic()) if deadlines else None
                conns = [self._wake_recv] + [w.conn for w in self._workers]
                for conn in wait(conns, timeout):
                    worker = next((w for w in self._workers if w.conn is conn), None)
                    if worker is not None:
                        self._receive(worker, pending)
                self._expire()
        finally:
            with self._lock:
                self._closed = True  # also after an unexpected error: submit() must not hang
            for worker in self._workers:
                if worker.job is not None:
                    pending.append(worker.job[:2])
                worker.kill()
            self._drain(pending)
            for _spec, future in pending:
                if future.set_running_or_notify_cancel():
                    future.set_exception(GrammarError("grammar compiler shut down"))

    def _drain(self, pending: collections.deque) -> None:
        while self._wake_recv.poll():
            self._wake_recv.recv_bytes()
        while True:
            try:
                pending.append(self._jobs.get_nowait())
            except queue.Empty:
                return

    def _assign(self, pending: collections.deque) -> None:
        while pending and len(self._workers) < self.max_workers:
            self._workers.append(_Worker(self.backend))
        for worker in self._workers:
            if pending and worker.ready and worker.job is None:
                spec, future = pending.popleft()
                if not future.set_running_or_notify_cancel():
                    continue
                worker.conn.send((spec.kind, spec.value))
                worker.job = (spec, future, time.monotonic() + self.timeout_s)

    def _receive(self, worker: _Worker, pending: collections.deque) -> None:
        try:
            message = worker.conn.recv()
        except (EOFError, OSError):
            if not worker.ready and pending:
                # A worker that cannot start (e.g. backend not installed) fails the next job
                # instead of being restarted forever.
                spec, future = pending.popleft()
                if future.set_running_or_notify_cancel():
                    future.set_exception(
                        GrammarError(f"{spec.kind}: compile worker failed to start")
                    )
            self._retire(worker, "the compile worker died")
            return
        if message[0] == "ready":
            worker.ready = True
            return
        assert worker.job is not None, "a result without a job"
        spec, future, _deadline = worker.job
        worker.job = None
        if message[0] == "error":
            future.set_exception(GrammarError(message[1]))
            return
        try:
            future.set_result(self.backend.load(message[1]))
        except GrammarError as exc:
            future.set_exception(exc)

    def _expire(self) -> None:
        now = time.monotonic()
        for worker in list(self._workers):
            if worker.job is not None and worker.job[2] <= now:
                self._retire(worker, f"compilation timed out after {self.timeout_s:g}s")

    def _retire(self, worker: _Worker, why: str) -> None:
        self._workers.remove(worker)
        worker.kill()
        if worker.job is not None:
            spec, future, _deadline = worker.job
            future.set_exception(GrammarError(f"{spec.kind}: {why}"))
