"""Reading checkpoint tensors (safetensors) and the random "dummy" init. Imports torch:
only the model runner uses this module."""

from __future__ import annotations

import glob
import os
from collections.abc import Iterator

import torch
from safetensors import safe_open
from torch import nn


def iter_safetensors(model_dir: str) -> Iterator[tuple[str, torch.Tensor]]:
    """Yields (HF name, CPU tensor) for every tensor of every *.safetensors file in the folder."""
    files = sorted(glob.glob(os.path.join(model_dir, "*.safetensors")))
    if not files:
        raise FileNotFoundError(f"no *.safetensors files in {model_dir}")
    for path in files:
        with safe_open(path, framework="pt") as f:
            for name in f.keys():
                yield name, f.get_tensor(name)


def init_dummy_weights(model: nn.Module, seed: int, std: float = 0.02) -> None:
    """Fills every parameter with N(0, std) from a fixed seed; norm weights get 1.

    A small std keeps activations and logits in a sane range through many layers, so dummy
    runs exercise the same code paths (and sampling) as real ones.
    """
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    for name, param in model.named_parameters():
        if name.endswith("norm.weight"):
            param.fill_(1.0)
        else:
            param.normal_(0.0, std, generator=generator)
