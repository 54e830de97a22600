"""The Llama-family decoder: Llama 2/3 (incl. llama3 rope scaling), SmolLM2, Mistral,
Qwen2/2.5 (q/k/v biases) and Qwen3 (per-head q/k RMSNorm, no biases).

They differ only in flags carried by ModelConfig (``attention_bias``, ``qk_norm``, rope
scaling), so one implementation serves all of them; the registry maps each HF architecture
name here. Attention goes through the runner's backend, which owns the paged KV cache.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from radixlm.runtime.attention.base import AttentionBackend
from radixlm.runtime.forward_batch import ForwardBatch
from radixlm.runtime.layers.activation import silu_and_mul
from radixlm.runtime.layers.embedding import LMHead, VocabEmbedding
from radixlm.runtime.layers.layernorm import RMSNorm
from radixlm.runtime.layers.linear import ColumnParallelLinear, RowParallelLinear
from radixlm.runtime.layers.rotary import RotaryEmbedding, apply_rotary
from radixlm.runtime.model_config import ModelConfig

# HF checkpoint projection name -> (our fused module, index of its slice).
_STACKED_PROJECTIONS = {
    "q_proj": ("qkv_proj", 0),
    "k_proj": ("qkv_proj", 1),
    "v_proj": ("qkv_proj", 2),
    "gate_proj": ("gate_up_proj", 0),
    "up_proj": ("gate_up_proj", 1),
}


class LlamaAttention(nn.Module):
    def __init__(self, config: ModelConfig, layer_id: int, tp_rank: int, tp_size: int) -> None:
        super().__init__()
        assert config.num_heads % tp_size == 0 and config.num_kv_heads % tp_size == 0
        self.layer_id = layer_id
        self.num_heads = config.num_heads // tp_size
        self.num_kv_heads = config.num_kv_heads // tp_size
        self.head_dim = config.head_dim
        self.q_size = self.num_heads * self.head_dim
        self.kv_size = self.num_kv_heads * self.head_dim
        self.scaling = self.head_dim**-0.5
        q_out, kv_out = config.num_heads * config.head_dim, config.num_kv_heads * config.head_dim
        self.qkv_proj = ColumnParallelLinear(
            config.hidden_size, [q_out, kv_out, kv_out], config.attention_bias, tp_rank, tp_size
        )
        self.o_proj = RowParallelLinear(q_out, config.hidden_size, tp_rank, tp_size)
        self.qk_norm = config.qk_norm
        if config.qk_norm:
            self.q_norm = RMSNorm(config.head_dim, config.rms_norm_eps)
            self.k_norm = RMSNorm(config.head_dim, config.rms_norm_eps)

    def forward(
        self,
        hidden_states: torch.Tensor,
        cos: torch.Tensor,
        sin_signed: torch.Tensor,
        attn_backend: AttentionBackend,
    ) -> torch.Tensor:
        num_tokens = hidden_states.shape[0]
        qkv = self.qkv_proj(hidden_states)  # (num_tokens, q_size + 2 * kv_size)
        # (num_tokens, num_kv_heads, head_dim)
        v = qkv[:, self.q_size + self.kv_size :].view(num_tokens, self.num_kv_heads, self.head_dim)
        if self.qk_norm:
            q = self.q_norm(qkv[:, : self.q_size].view(num_tokens, self.num_heads, self.head_dim))
            k = self.k_norm(
                qkv[:, self.q_size : self.q_size + self.kv_size].view(
                    num_tokens, self.num_kv_heads, self.head_dim
                )
            )
            q, k = apply_rotary(q, cos, sin_signed), apply_rotary(k, cos, sin_signed)
        else:
            # q and k sit side by side in qkv: rotate them as one (num_tokens, heads, dim) tensor.
            qk = qkv[:, : self.q_size + self.kv_size].view(
                num_tokens, self.num_heads + self.num_kv_heads, self.head_dim
            )
            qk = apply_rotary(qk, cos, sin_signed)
            q, k = qk[:, : self.num_heads], qk[:, self.num_heads :]
        out = attn_backend.forward(q, k, v, self.layer_id, self.scaling)  # (num_tokens, heads, dim)
        return self.o_proj(out.reshape(num_tokens, self.q_size))


class LlamaMLP(nn.Module):
    def __init__(self, config: ModelConfig, tp_rank: int, tp_size: int) -> None:
        super().__init__()
        size = config.intermediate_size
        self.gate_up_proj = ColumnParallelLinear(
            config.hidden_size, [size, size], False, tp_rank, tp_size
        )
        self.gate_up_proj.swiglu = True
        self.down_proj = RowParallelLinear(size, config.hidden_size, tp_rank, tp_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate_up = self.gate_up_proj(x)
        hidden = gate_up if self.gate_up_proj.silu_fused else silu_and_mul(gate_up)
        return self.down_proj(hidden)


class LlamaDecoderLayer(nn.Module):
    def __init__(self, config: ModelConfig, layer_id: int, tp_rank: int, tp_size: int) -> None:
        super().__init__()
        self.self_attn = LlamaAttention(config, layer_id, tp_rank, tp_size)
        self.mlp = LlamaMLP(config, tp_rank, tp_size)
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)

    def forward(
        self,
        hidden_states: torch.Tensor,
        residual: torch.Tensor | None,
        cos: torch.Tensor,
        sin_signed: torch.Tensor,
        attn_backend: AttentionBackend,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if residual is None:
            residual = hidden_states
            hidden_states = self.input_layernorm(hidden_states)
        else:
            hidden_states, residual = self.input_layernorm.forward_with_residual(
                hidden_states, residual
            )
        hidden_states = self.self_attn(hidden_states, cos, sin_signed, attn_backend)
        hidden_states, residual = self.post_attention_layernorm.forward_with_residual(
            hidden_states, residual
        )
        return self.mlp(hidden_states), residual


class LlamaModel(nn.Module):
    def __init__(self, config: ModelConfig, max_positions: int, tp_rank: int, tp_size: int) -> None:
        super().__init__()
        self.embed_tokens = VocabEmbedding(config.vocab_size, config.hidden_size)
        self.rotary_emb = RotaryEmbedding(
            config.head_dim, max_positions, config.rope_theta, config.rope_scaling
        )
        self.layers = nn.ModuleList(
            LlamaDecoderLayer(config, i, tp_rank, tp_size) for i in range(config.num_layers)
        )
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        # The layers and the final norm as one compiled loop on CPU, set by the runner where
        # every piece of them runs on our kernels (runtime/models/cpu_decoder.py).
        self.cpu_decoder = None

    def forward(
        self, input_ids: torch.Tensor, positions: torch.Tensor, attn_backend: AttentionBackend
    ) -> torch.Tensor:
        hidden_states = self.embed_tokens(input_ids)  # (num_tokens, hidden)
        cos, sin_signed = self.rotary_emb(positions)  # once per batch, shared by all layers
        kernel_inputs = None if self.cpu_decoder is None else attn_backend.cpu_kernel_inputs()
        if kernel_inputs is not None:
            return self.cpu_decoder.forward(hidden_states, cos, sin_signed, *kernel_inputs)
        residual = None
        for layer in self.layers:
            hidden_states, residual = layer(hidden_states, residual, cos, sin_signed, attn_backend)
        hidden_states, _ = self.norm.forward_with_residual(hidden_states, residual)
        return hidden_states


class LlamaForCausalLM(nn.Module):
    def __init__(
        self, config: ModelConfig, max_positions: int, tp_rank: int = 0, tp_size: int = 1
    ) -> None:
        super().__init__()
        self.config = config
        self.model = LlamaModel(config, max_positions, tp_rank, tp_size)
        tied_to = self.model.embed_tokens if config.tie_word_embeddings else None
        self.lm_head = LMHead(config.vocab_size, config.hidden_size, tied_to)

    def forward(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor,
        forward_batch: ForwardBatch,
        attn_backend: AttentionBackend,
    ) -> torch.Tensor:
        """Hidden states (num_tokens, hidden) of the batch's new tokens.

        ``attn_backend`` has already been prepared for ``forward_batch``.
        """
        assert input_ids.shape[0] == forward_batch.num_tokens
        return self.model(input_ids, positions, attn_backend)

    def compute_logits(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.lm_head(hidden_states)  # (rows, vocab) float32

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Copies HF-named checkpoint tensors into our (fused, possibly sharded) parameters."""
        modules = dict(self.named_modules())
        params = dict(self.named_parameters())  # a tied lm_head appears once, as embed_tokens
        loaded: set[str] = set()
        for name, tensor in weights:
            if "rotary_emb.inv_freq" in name:
                continue  # recomputed from the config
            if name == "lm_head.weight" and self.config.tie_word_embeddings:
                continue  # some tied checkpoints still ship a copy
            module_name, _, param_name = name.rpartition(".")
            parent, _, leaf = module_name.rpartition(".")
            if leaf in _STACKED_PROJECTIONS:
                fused, index = _STACKED_PROJECTIONS[leaf]
                module_name = f"{parent}.{fused}"
                modules[module_name].load_shard(index, tensor, is_bias=param_name == "bias")
            elif isinstance(modules.get(module_name), RowParallelLinear):
                modules[module_name].load_shard(tensor)
            elif name in params:
                assert params[name].shape == tensor.shape, (name, params[name].shape, tensor.shape)
                params[name].copy_(tensor)
            else:
                raise ValueError(f"unexpected weight {name!r} in checkpoint")
            loaded.add(f"{module_name}.{param_name}")
        missing = sorted(set(params) - loaded)
        if missing:
            raise ValueError(f"checkpoint is missing weights: {missing[:8]}")
