"""A Llama-family decoder's layers as one compiled loop over our CPU kernels.

Each kernel of a CPU pass is one compiled call, but between them the Python layer code (module
calls, slicing, checks) ran on the calling thread while torch's other threads spun at their
barrier: in a decode step of the default model (32 sequences x 320 tokens) that was ~20 % of the
step's wall time (perf: the interpreter and torch's dispatch on one thread, libgomp's spinning
on the other). This loop makes the same calls, in the same order, on the same tensors, from C++:
the same bits as the Python layers, without the interpreter between them. Interleaved decode
steps (32 x 320, Intel Xeon, 2 cores): median 47.3 -> 40.0 ms; c = 32 serving, alternating
runs: 350.7 / 333.6 -> 386.6 / 369.5 output tok/s.

It calls the kernels through the addresses their modules export (``function_address`` in
cpu_extension.py), with the signatures of their sources:
  rms_norm / add_rms_norm / rotary / silu_and_mul / store_kv   kernels/cpu_layer_ops.py
  paged_attention                                              kernels/cpu_paged_attention.py
  amx_prompt_attention (optional: prompt tokens on AMX tiles)  kernels/cpu_amx_attention.py
  matmuls ``(x, packed, width)`` or ``(x, q, dm, width)``       kernels/cpu_amx_matmul.py,
                                                               kernels/cpu_dense_matmul.py
A linear takes the first of its routes whose row limit admits the pass (the block kernel for
few rows, the dense copy for the rest), as ``MatmulRoute`` does in Python.

Layouts: hidden (tokens, hidden) float32; cos / sin_signed (tokens, 1, head_dim); the attention
inputs as ``paged_attention`` takes them; per layer the RMSNorm weights, K/V buffers and four
linears (fused q/k/v without bias, o, fused gate/up, down).
"""

from __future__ import annotations

from types import ModuleType

from radixlm.kernels.cpu_extension import load_cpu_extension

_SOURCE = r"""
#include <torch/extension.h>
#include <map>
#include <string>
#include <tuple>
#include <vector>

using torch::Tensor;

using RmsNorm = Tensor (*)(Tensor, Tensor, double);
using AddRmsNorm = Tensor (*)(Tensor, Tensor, Tensor, double);
using Rotary = Tensor (*)(Tensor, Tensor, Tensor);
using SiluAndMul = Tensor (*)(Tensor);
using StoreKv = void (*)(Tensor, Tensor, Tensor, Tensor, Tensor);
using PagedAttention = Tensor (*)(Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, double);
using PromptAttention = void (*)(Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor,
                                 double);
using PackedMatmul = Tensor (*)(Tensor, Tensor, int64_t);          // (x, packed, width)
using BlockMatmul = Tensor (*)(Tensor, Tensor, Tensor, int64_t);   // (x, q, dm, width)

template <typename Function>
static Function at_address(const std::map<std::string, int64_t>& addresses,
                           const std::string& name) {
  const auto found = addresses.find(name);
  TORCH_CHECK(found != addresses.end(), "no address for ", name);
  return reinterpret_cast<Function>(found->second);
}

// A linear's kernel for passes of up to max_rows rows (-1: any).
struct Route {
  int64_t max_rows;
  int64_t address;
  std::vector<Tensor> weights;  // (packed) or (q, dm)
  int64_t width;

  Tensor run(const Tensor& rows) const {
    if (weights.size() == 1)
      return reinterpret_cast<PackedMatmul>(address)(rows, weights[0], width);
    return reinterpret_cast<BlockMatmul>(address)(rows, weights[0], weights[1], width);
  }
};

struct Linear {
  std::vector<Route> routes;

  Tensor operator()(const Tensor& x) const {
    for (const Route& route : routes)
      if (route.max_rows < 0 || x.size(0) <= route.max_rows) return route.run(x.contiguous());
    TORCH_CHECK(false, "no matmul route takes ", x.size(0), " rows");
  }
};

struct Layer {
  Tensor input_norm, post_attention_norm, k_buffer, v_buffer;
  Linear qkv, o, gate_up, down;
};

// (layer, linear: 0 q/k/v, 1 o, 2 gate/up, 3 down, max_rows, kernel address, weights, width)
using RouteSpec = std::tuple<int64_t, int64_t, int64_t, int64_t, std::vector<Tensor>, int64_t>;

class CpuDecoder {
 public:
  CpuDecoder(const std::map<std::string, int64_t>& kernels, int64_t num_heads,
             int64_t num_kv_heads, int64_t head_dim, double eps, double scale, bool silu_fused,
             const std::vector<Tensor>& norms, const std::vector<Tensor>& kv_buffers,
             const std::vector<RouteSpec>& routes)
      : rms_norm_(at_address<RmsNorm>(kernels, "rms_norm")),
        add_rms_norm_(at_address<AddRmsNorm>(kernels, "add_rms_norm")),
        rotary_(at_address<Rotary>(kernels, "rotary")),
        silu_and_mul_(at_address<SiluAndMul>(kernels, "silu_and_mul")),
        store_kv_(at_address<StoreKv>(kernels, "store_kv")),
        attention_(at_address<PagedAttention>(kernels, "paged_attention")),
        prompt_attention_(kernels.count("amx_prompt_attention")
                              ? at_address<PromptAttention>(kernels, "amx_prompt_attention")
                              : nullptr),
        num_heads_(num_heads), num_kv_heads_(num_kv_heads), head_dim_(head_dim), eps_(eps),
        scale_(scale), silu_fused_(silu_fused) {
    const size_t num_layers = kv_buffers.size() / 2;
    TORCH_CHECK(kv_buffers.size() == 2 * num_layers && norms.size() == 2 * num_layers + 1,
                "two norms and K/V buffers per layer, and the final norm");
    layers_.resize(num_layers);
    for (size_t i = 0; i < num_layers; ++i) {
      layers_[i].input_norm = norms[2 * i];
      layers_[i].post_attention_norm = norms[2 * i + 1];
      layers_[i].k_buffer = kv_buffers[2 * i];
      layers_[i].v_buffer = kv_buffers[2 * i + 1];
    }
    final_norm_ = norms.back();
    for (const auto& [layer, linear, max_rows, address, weights, width] : routes) {
      TORCH_CHECK(layer >= 0 && layer < (int64_t)num_layers && linear >= 0 && linear < 4 &&
                  (weights.size() == 1 || weights.size() == 2));
      Layer& l = layers_[layer];
      Linear* target[4] = {&l.qkv, &l.o, &l.gate_up, &l.down};
      target[linear]->routes.push_back({max_rows, address, weights, width});
    }
  }

  // The final norm's output for the pass's tokens; writes their K/V as a side effect.
  Tensor forward(Tensor hidden, const Tensor& cos, const Tensor& sin_signed,
                 const Tensor& out_cache_loc, const Tensor& slots, const Tensor& seq_lens,
                 const Tensor& extend_lens, const Tensor& prompt_rows) const {
    TORCH_CHECK(hidden.dtype() == torch::kFloat32 && hidden.dim() == 2);
    // Decode passes have no prompt rows: no call to the prompt kernel per layer then.
    const bool has_prompt_rows = prompt_rows.max().item<int64_t>() > 0;
    TORCH_CHECK(prompt_attention_ || !has_prompt_rows, "prompt rows given, but no prompt kernel");
    const int64_t tokens = hidden.size(0);
    const int64_t q_size = num_heads_ * head_dim_, kv_size = num_kv_heads_ * head_dim_;
    Tensor residual;
    for (const Layer& layer : layers_) {
      Tensor x;
      if (!residual.defined()) {
        residual = hidden;
        x = rms_norm_(hidden, layer.input_norm, eps_);
      } else {
        x = add_rms_norm_(hidden, residual, layer.input_norm, eps_);
      }
      const Tensor qkv = layer.qkv(x);
      const Tensor v = qkv.narrow(1, q_size + kv_size, kv_size)
                           .view({tokens, num_kv_heads_, head_dim_});
      // q and k side by side in qkv: rotated as one (tokens, heads, dim) tensor.
      const Tensor qk = rotary_(qkv.narrow(1, 0, q_size + kv_size)
                                    .view({tokens, num_heads_ + num_kv_heads_, head_dim_}),
                                cos, sin_signed);
      const Tensor q = qk.narrow(1, 0, num_heads_);
      store_kv_(layer.k_buffer, layer.v_buffer, out_cache_loc,
                qk.narrow(1, num_heads_, num_kv_heads_), v);
      const Tensor attended = attention_(q, layer.k_buffer, layer.v_buffer, slots, seq_lens,
                                         extend_lens, prompt_rows, scale_);
      if (has_prompt_rows)
        prompt_attention_(q, layer.k_buffer, layer.v_buffer, slots, seq_lens, extend_lens,
                          prompt_rows, attended, scale_);
      x = add_rms_norm_(layer.o(attended.reshape({tokens, q_size})), residual,
                        layer.post_attention_norm, eps_);
      const Tensor gate_up = layer.gate_up(x);
      hidden = layer.down(silu_fused_ ? gate_up : silu_and_mul_(gate_up));
    }
    return add_rms_norm_(hidden, residual, final_norm_, eps_);
  }

 private:
  RmsNorm rms_norm_;
  AddRmsNorm add_rms_norm_;
  Rotary rotary_;
  SiluAndMul silu_and_mul_;
  StoreKv store_kv_;
  PagedAttention attention_;
  PromptAttention prompt_attention_;  // nullptr: every token on attention_
  int64_t num_heads_, num_kv_heads_, head_dim_;
  double eps_, scale_;
  bool silu_fused_;
  std::vector<Layer> layers_;
  Tensor final_norm_;
};

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  pybind11::class_<CpuDecoder>(m, "CpuDecoder")
      .def(pybind11::init<const std::map<std::string, int64_t>&, int64_t, int64_t, int64_t,
                          double, double, bool, const std::vector<Tensor>&,
                          const std::vector<Tensor>&, const std::vector<RouteSpec>&>())
      .def("forward", &CpuDecoder::forward, pybind11::call_guard<pybind11::gil_scoped_release>());
}
"""


def load_cpu_decoder() -> ModuleType | None:
    """The compiled module (class ``CpuDecoder``), or None if this machine cannot build it."""
    return load_cpu_extension("radixlm_cpu_decoder", _SOURCE, None)
