"""Hands a Llama-family model's CPU layers to the compiled decoder loop (kernels/cpu_decoder.py),
where every piece of them runs on one of our compiled kernels; None where any does not (a
oneDNN matmul, biases, q/k norms, bfloat16 activations, tensor parallelism, no
compiler), and the model keeps its Python layers."""

from __future__ import annotations

from typing import Any

import torch

from radixlm.kernels.cpu_amx_attention import load_cpu_amx_prompt_attention
from radixlm.kernels.cpu_decoder import load_cpu_decoder
from radixlm.kernels.cpu_extension import function_address
from radixlm.kernels.cpu_layer_ops import load_cpu_layer_ops
from radixlm.kernels.cpu_paged_attention import load_cpu_paged_attention
from radixlm.runtime.layers.linear import LinearBase
from radixlm.runtime.memory_pool import KVCache
from radixlm.runtime.models.llama import LlamaModel

_LAYER_OPS = ("rms_norm", "add_rms_norm", "rotary", "silu_and_mul", "store_kv")


def build_cpu_decoder(model: LlamaModel, kv_cache: KVCache) -> Any | None:
    """The compiled loop over ``model``'s layers, or None (see the module doc)."""
    layers = model.layers
    first = layers[0]
    attention = first.self_attn
    if attention.qk_norm or model.norm.weight.dtype != torch.float32:
        return None
    module, ops, paged_attention = (
        load_cpu_decoder(),
        load_cpu_layer_ops(),
        load_cpu_paged_attention(),
    )
    if module is None or ops is None or paged_attention is None:
        return None
    kernels = {name: function_address(getattr(ops, name)) for name in _LAYER_OPS}
    kernels["paged_attention"] = function_address(paged_attention)
    # The attention backend takes the same kernel under the same conditions: they agree on
    # which tokens are prompt rows.
    prompt_attention = load_cpu_amx_prompt_attention(kv_cache.dtype, attention.head_dim)
    if prompt_attention is not None:
        kernels["amx_prompt_attention"] = function_address(prompt_attention)
    routes = []
    for index, layer in enumerate(layers):
        linears = (
            layer.self_attn.qkv_proj,
            layer.self_attn.o_proj,
            layer.mlp.gate_up_proj,
            layer.mlp.down_proj,
        )
        for position, linear in enumerate(linears):
            specs = _route_specs(linear)
            if specs is None:
                return None
            routes += [(index, position, *spec) for spec in specs]
    silu_fused = {layer.mlp.gate_up_proj.silu_fused for layer in layers}
    norms = [n for layer in layers for n in (layer.input_layernorm, layer.post_attention_layernorm)]
    norms.append(model.norm)
    if None in kernels.values() or len(silu_fused) != 1 or len({n.eps for n in norms}) != 1:
        return None
    return module.CpuDecoder(
        kernels,
        attention.num_heads,
        attention.num_kv_heads,
        attention.head_dim,
        norms[0].eps,
        attention.scaling,
        silu_fused.pop(),
        [n.weight for n in norms],
        [b for i in range(len(layers)) for b in (kv_cache.k_buffer[i], kv_cache.v_buffer[i])],
        routes,
    )


def _route_specs(linear: LinearBase) -> list[tuple] | None:
    """``(max_rows, kernel address, weights, width)`` per route of the linear's CPU weight."""
    if linear.cpu_weight is None or linear.bias is not None or getattr(linear, "tp_size", 1) > 1:
        return None
    routes = linear.cpu_weight.routes()
    if routes is None:
        return None
    specs = []
    for route in routes:
        address = function_address(route.kernel)
        if address is None:
            return None
        max_rows = -1 if route.max_rows is None else route.max_rows
        specs.append((max_rows, address, list(route.weights), route.width))
    return specs
