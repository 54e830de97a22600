"""Programmatic dependent launch (PDL, Hopper and later) for the decode step's kernels.

A batch-1 decode step is a chain of ~350 kernels, most of them a few microseconds long. With
PDL each kernel of the chain is launched while the one before it still runs: its programs
become resident, do what does not depend on the previous kernel (the GEMV pulls its first
weight lines into L2), then wait for the previous kernel's writes. The memory system then
stays busy across kernel boundaries instead of draining at each one.

The rule every PDL kernel here follows: before ``wait_for_previous`` it reads nothing a
previous kernel writes and writes nothing at all. Waiting is transitive (a kernel ends only
after its own wait), so outputs of any earlier kernel are visible after it. Kernels launched
without PDL (torch's, or ours on older GPUs) keep the plain stream order.
"""

from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

# Benchmarks switch this off to measure what PDL buys (bench_gpu_profile.py --variants).
ENABLED = True


@functools.cache
def _supported(device_index: int) -> bool:
    return torch.cuda.get_device_capability(device_index)[0] >= 9


def pdl_options(device: torch.device) -> dict[str, bool]:
    """Launch keywords for a kernel taking a ``PDL`` constexpr that it hands to
    ``wait_for_previous``: ``PDL`` in the kernel, ``launch_pdl`` for Triton's launcher."""
    index = device.index if device.index is not None else torch.cuda.current_device()
    enabled = ENABLED and _supported(index)
    return {"PDL": enabled, "launch_pdl": enabled}


@triton.jit
def launch_next(PDL: tl.constexpr):
    """Lets the next kernel's programs start (they wait for this kernel's writes themselves)."""
    if PDL:
        tl.extra.cuda.gdc_launch_dependents()


@triton.jit
def wait_for_previous(PDL: tl.constexpr):
    """Blocks until the previous kernel has finished and its writes are visible."""
    if PDL:
        tl.extra.cuda.gdc_wait()


@triton.jit
def start_after_previous(PDL: tl.constexpr):
    """The opening of a kernel with nothing to do before its inputs are ready."""
    launch_next(PDL)
    wait_for_previous(PDL)


@triton.jit
def prefetch_l2(ptrs):
    """A hint: pull the 128-byte lines at ``ptrs`` into L2 (no registers, nothing waits)."""
    tl.inline_asm_elementwise(
        "prefetch.global.L2 [$1]; // $0", "=r,l", [ptrs], dtype=tl.int32, is_pure=False, pack=1
    )
