"""Programmatic dependent launch (PDL, Hopper and later) for the decode step's kernels.

A batch-1 decode step is a chain of ~350 kernels, most of them a few microseconds long. With
PDL each kernel of the chain is launched while the one before it still runs: its programs
become resident and wait there for the previous kernel's writes, so the launch latency and
the ramp-up of each kernel overlap the tail of the one before instead of following it.

The rule every PDL kernel here follows: before ``start_after_previous`` returns it reads
nothing and writes nothing. Waiting is transitive (a kernel ends only after its own wait), so
the outputs of every earlier kernel are visible after it. Kernels launched without PDL
(torch's, or ours on older GPUs) keep the plain stream order.
"""

from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

# Benchmarks switch this off to measure what PDL buys (bench_one_batch.py --disable-pdl).
ENABLED = True


@functools.cache
def _supported(device_index: int) -> bool:
    return torch.cuda.get_device_capability(device_index)[0] >= 9


def pdl_options(device: torch.device) -> dict[str, bool]:
    """Launch keywords for a kernel taking a ``PDL`` constexpr that it hands to
    ``start_after_previous``: ``PDL`` in the kernel, ``launch_pdl`` for Triton's launcher."""
    index = device.index if device.index is not None else torch.cuda.current_device()
    enabled = ENABLED and _supported(index)
    return {"PDL": enabled, "launch_pdl": enabled}


@triton.jit
def start_after_previous(PDL: tl.constexpr):
    """A PDL kernel's first statement: lets the next kernel's programs launch (they wait for
    this kernel's writes themselves), then waits until the previous kernel has finished and
    its writes are visible."""
    if PDL:
        tl.extra.cuda.gdc_launch_dependents()
        tl.extra.cuda.gdc_wait()
