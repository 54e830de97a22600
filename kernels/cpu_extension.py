"""Builds our C++ CPU kernels with torch's extension loader, once per machine and torch install.

The first build compiles against torch's headers (about half a minute); later processes load
the cached library from ``~/.cache/torch_extensions`` (or ``TORCH_EXTENSIONS_DIR``). Kernels are
compiled for the host CPU (``-march=native``): a kernel whose instructions this CPU lacks fails
to build, and callers keep their torch path; a kernel that names the CPU flags it needs is not
even tried where /proc/cpuinfo lacks them (a failed build is not cached: every process would
spend half a minute on it again). Several kernels may build at once, each in its own
thread (a build is a compiler subprocess); a second caller of one kernel waits for its build.

Every module also exports its functions' addresses (``function_address``), so that a compiled
loop (kernels/cpu_decoder.py) can call another module's kernels without going through Python.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import threading
from collections import defaultdict
from types import ModuleType

logger = logging.getLogger(__name__)


_build_locks: defaultdict[str, threading.Lock] = defaultdict(threading.Lock)
# id(a loaded module's function) -> its address in the process (see function_address).
_addresses: dict[int, int] = {}


def load_cpu_extension(
    name: str,
    source: str,
    functions: tuple[str, ...] | None,
    cpu_flags: tuple[str, ...] = (),
) -> ModuleType | None:
    """The compiled module exposing ``functions``, or None if this machine cannot build it.
    ``functions=None``: the source binds its own module (``PYBIND11_MODULE``). ``cpu_flags``:
    /proc/cpuinfo's names of the instruction sets the source needs."""
    known = host_cpu_flags()
    if known and not known.issuperset(cpu_flags):
        return None
    with _build_locks[name]:
        return _build_or_load(name, source, functions)


@functools.cache
def host_cpu_flags() -> frozenset[str]:
    """The CPU's flags as /proc/cpuinfo lists them; empty where it cannot be read."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("flags"):
                    return frozenset(line.partition(":")[2].split())
    except OSError:
        pass
    return frozenset()


def function_address(function: object) -> int | None:
    """Where a function of a module that ``load_cpu_extension`` built lives in this process
    (its C++ signature is the source's), or None for any other callable."""
    return _addresses.get(id(function))


def _with_addresses(source: str, functions: tuple[str, ...]) -> str:
    """The source plus ``function_addresses()``: each function's name and address."""
    entries = ", ".join(f'{{"{f}", reinterpret_cast<int64_t>(&{f})}}' for f in functions)
    return (
        source
        + "\nstd::map<std::string, int64_t> function_addresses() { return {"
        + entries
        + "}; }\n"
    )


@functools.cache
def _build_or_load(name: str, source: str, functions: tuple[str, ...] | None) -> ModuleType | None:
    import torch
    from torch.utils import cpp_extension

    # One build per torch installation: two virtual environments would otherwise share the build
    # folder of `name`, and each would rebuild it (~40 s) whenever the other had loaded it last.
    install = hashlib.sha1(os.path.dirname(torch.__file__).encode()).hexdigest()[:8]
    if functions is not None:
        source = _with_addresses(source, functions)
    try:
        module = cpp_extension.load_inline(
            name=f"{name}_{install}",
            cpp_sources=[source],
            functions=None if functions is None else [*functions, "function_addresses"],
            # -fno-math-errno lets `omp simd` loops call the vectorized exp.
            extra_cflags=["-O3", "-march=native", "-fopenmp", "-fno-math-errno"],
        )
    except (OSError, RuntimeError, ImportError) as exc:  # no compiler, headers, ninja or ISA
        logger.warning("CPU kernel %s unavailable, using torch: %s", name, exc)
        return None
    for function, address in (module.function_addresses() if functions else {}).items():
        _addresses[id(getattr(module, function))] = address
    return module
