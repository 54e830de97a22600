"""Starts the scheduler and detokenizer processes, waits for their "ready", and tears them down.

Children are spawned (never forked: the parent may hold threads and sockets) with JSON-string
arguments; each dies with its parent (PR_SET_PDEATHSIG), and ``stop`` removes the socket folder.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import multiprocessing as mp
import os
import threading
from collections.abc import Callable
from multiprocessing.connection import Connection, wait

from radixlm.runtime import ipc
from radixlm.runtime.detokenizer import run_detokenizer
from radixlm.runtime.model_loader import ResolvedModel, resolve_model
from radixlm.runtime.scheduler_process import run_scheduler
from radixlm.runtime.server_args import ServerArgs

logger = logging.getLogger(__name__)

READY_TIMEOUT_S = 900.0  # first start converts the GGUF and may compile kernels
# glibc returns large freed blocks to the OS at once, so every step's multi-MB logits and
# activation tensors fault their pages back in; keeping them mapped speeds CPU steps up ~1.5x.
CHILD_ENV = {
    "MALLOC_MMAP_THRESHOLD_": "33554432",
    "MALLOC_TRIM_THRESHOLD_": "1073741824",
}


class ServerStartError(RuntimeError):
    pass


class ServerProcesses:
    def __init__(self, args: ServerArgs) -> None:
        self.args = args
        self.resolved: ResolvedModel = resolve_model(args.model_path, args.load_format)
        self.endpoints = ipc.IpcEndpoints.create()
        self.info: dict = {}
        self._procs: list[mp.Process] = []
        self._stopping = False

    def start(self) -> dict:
        """Spawns both processes and blocks until both are ready; returns the scheduler's info."""
        ctx = mp.get_context("spawn")
        for key, value in CHILD_ENV.items():  # read by glibc and OpenMP when a child starts
            os.environ.setdefault(key, value)
        endpoints_json = json.dumps(dataclasses.asdict(self.endpoints))
        sched_recv, sched_send = ctx.Pipe(duplex=False)
        detok_recv, detok_send = ctx.Pipe(duplex=False)
        scheduler = ctx.Process(
            target=run_scheduler,
            args=(
                json.dumps(self.args.to_dict()),
                json.dumps(dataclasses.asdict(self.resolved)),
                endpoints_json,
                sched_send,
            ),
            name="radixlm-scheduler",
            # Not a daemon: it runs grammar-compile worker processes. It still dies with us
            # (PR_SET_PDEATHSIG) and ``stop`` kills it.
            daemon=False,
        )
        detokenizer = ctx.Process(
            target=run_detokenizer,
            args=(self.resolved.tokenizer_dir, endpoints_json, self.args.log_level, detok_send),
            name="radixlm-detokenizer",
            daemon=True,
        )
        logger.info("internal sockets in ipc://%s", self.endpoints.directory)
        self._procs = [scheduler, detokenizer]
        for proc in self._procs:
            proc.start()
        try:
            self.info = self._wait_ready(sched_recv, scheduler)
            self._wait_ready(detok_recv, detokenizer)
        except BaseException:
            self.stop()
            raise
        return self.info

    def _wait_ready(self, conn: Connection, proc: mp.Process) -> dict:
        ready = wait([conn, proc.sentinel], timeout=READY_TIMEOUT_S)
        if conn not in ready:
            raise ServerStartError(
                f"{proc.name} exited before it was ready (exit code {proc.exitcode})"
                if proc.sentinel in ready
                else f"{proc.name} start timed out"
            )
        info = json.loads(conn.recv_bytes())
        if "error" in info:
            raise ServerStartError(f"{proc.name} failed to start: {info['error']}")
        return info

    def watch(self, on_child_death: Callable[[str], None]) -> None:
        """Calls ``on_child_death(name)`` from a thread if a child dies while we are not stopping."""

        def run() -> None:
            sentinels = {p.sentinel: p for p in self._procs}
            ready = wait(list(sentinels))
            if not self._stopping:
                proc = sentinels[ready[0]]
                proc.join(5)  # the sentinel can fire before the exit status is there to read
                on_child_death(f"{proc.name} died (exit code {proc.exitcode})")

        threading.Thread(target=run, name="radixlm-child-watch", daemon=True).start()

    def join(self, timeout_s: float) -> None:
        """Waits for the children to exit by themselves (after a graceful shutdown request)."""
        for proc in self._procs:
            proc.join(timeout_s)

    def stop(self) -> None:
        self._stopping = True
        # Children ignore SIGTERM (process_utils.die_with_parent); by now the drain has finished
        # what they had in flight, and they hold nothing that must be flushed.
        for proc in self._procs:
            if proc.is_alive():
                proc.kill()
        for proc in self._procs:
            proc.join(5)
        self.endpoints.remove()
