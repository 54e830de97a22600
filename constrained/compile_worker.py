"""The compile worker process: builds grammar artifacts for GrammarCompiler.

Runs in its own (spawned) process so a compile that runs past its time limit can be killed;
threads cannot be cancelled and a native compile holds its thread until it returns.
Messages over the pipe: ("ready",) once, then per job ("ok", artifact) or ("error", message).
The pipe is an anonymous pipe between this process and its parent only (pickle never leaves it).
"""

from __future__ import annotations

from multiprocessing.connection import Connection

from radixlm.constrained.spec import GrammarError, GrammarSpec, TokenizerVocab


def worker_main(conn: Connection, backend_name: str, vocab: TokenizerVocab, compact: bool) -> None:
    from radixlm.constrained.backend import create_grammar_backend

    backend = create_grammar_backend(backend_name, vocab, compact_json=compact)
    conn.send(("ready",))
    while True:
        try:
            kind, value = conn.recv()
        except EOFError:
            return
        try:
            conn.send(("ok", backend.build(GrammarSpec(kind, value))))
        except GrammarError as exc:
            conn.send(("error", exc.message))
        except RecursionError:
            conn.send(("error", f"{kind}: the spec nests too deeply to compile"))
        except MemoryError:
            conn.send(("error", f"{kind}: compiling the spec ran out of memory"))
