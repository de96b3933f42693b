"""Where each decoder parameter comes from in a Hugging Face or GGUF checkpoint, and how it is reshaped.

One row per parameter; `{i}` stands for the layer index. A row's `hf_alias` is read when its `hf_name` is
absent: Gemma names the pre-MLP norm `pre_feedforward_layernorm` and uses `post_attention_layernorm` for
the norm on the attention output, while Llama's `post_attention_layernorm` is its pre-MLP norm.
Transforms:
  "copy"       used as stored
  "transpose"  torch Linear layout [out, in] -> our [in, out] kernels
  "norm"       llama.cpp stores Gemma's RMSNorm weights with the +1 folded in (it scales by w, not 1 + w);
               subtract the config's `norm_weight_offset` again (a no-op for offset 0)
  "unrope_q" / "unrope_k"  llama.cpp's converter interleaves the two rotary halves of each head of the
               Llama-architecture Q and K projections (its RoPE pairs adjacent dimensions); undo that so
               the rotate-half RoPE serves both sources, then transpose.

Quantized models (`--quantization int8`) hold each projection `p` as two parameters, `p.kernel` (int8) and
`p.scale` (float32, one per output channel); both are derived on the host from the float tensor that row `p`
maps (`QUANTIZED_PARTS`), so the table itself does not change. A quantized tied-embedding model also has
`tied_lm_head`, its int8 LM head, read from the embedding tensor and transposed to [D, V].
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np

from jaxserve.modeling.config import ModelConfig


@dataclass(frozen=True)
class WeightSource:
    param: str  # flattened NNX path, e.g. "layers.{i}.attn.q_proj"
    hf_name: str
    gguf_name: str
    hf_transform: str = "copy"
    gguf_transform: str = "copy"
    hf_alias: str | None = None


WEIGHT_MAP: tuple[WeightSource, ...] = (
    WeightSource("embedding", "model.embed_tokens.weight", "token_embd.weight"),
    WeightSource(
        "layers.{i}.input_norm.weight",
        "model.layers.{i}.input_layernorm.weight",
        "blk.{i}.attn_norm.weight",
        gguf_transform="norm",
    ),
    WeightSource(
        "layers.{i}.attn.q_proj",
        "model.layers.{i}.self_attn.q_proj.weight",
        "blk.{i}.attn_q.weight",
        "transpose",
        "unrope_q",
    ),
    WeightSource(
        "layers.{i}.attn.k_proj",
        "model.layers.{i}.self_attn.k_proj.weight",
        "blk.{i}.attn_k.weight",
        "transpose",
        "unrope_k",
    ),
    WeightSource(
        "layers.{i}.attn.v_proj",
        "model.layers.{i}.self_attn.v_proj.weight",
        "blk.{i}.attn_v.weight",
        "transpose",
        "transpose",
    ),
    WeightSource(
        "layers.{i}.attn.o_proj",
        "model.layers.{i}.self_attn.o_proj.weight",
        "blk.{i}.attn_output.weight",
        "transpose",
        "transpose",
    ),
    WeightSource("layers.{i}.attn.q_bias", "model.layers.{i}.self_attn.q_proj.bias", "blk.{i}.attn_q.bias"),
    WeightSource("layers.{i}.attn.k_bias", "model.layers.{i}.self_attn.k_proj.bias", "blk.{i}.attn_k.bias"),
    WeightSource("layers.{i}.attn.v_bias", "model.layers.{i}.self_attn.v_proj.bias", "blk.{i}.attn_v.bias"),
    WeightSource(
        "layers.{i}.attn.q_norm.weight",
        "model.layers.{i}.self_attn.q_norm.weight",
        "blk.{i}.attn_q_norm.weight",
        gguf_transform="norm",
    ),
    WeightSource(
        "layers.{i}.attn.k_norm.weight",
        "model.layers.{i}.self_attn.k_norm.weight",
        "blk.{i}.attn_k_norm.weight",
        gguf_transform="norm",
    ),
    WeightSource(
        "layers.{i}.post_attn_norm.weight",
        "model.layers.{i}.post_attention_layernorm.weight",
        "blk.{i}.post_attention_norm.weight",
        gguf_transform="norm",
    ),
    WeightSource(
        "layers.{i}.pre_mlp_norm.weight",
        "model.layers.{i}.pre_feedforward_layernorm.weight",
        "blk.{i}.ffn_norm.weight",
        gguf_transform="norm",
        hf_alias="model.layers.{i}.post_attention_layernorm.weight",
    ),
    WeightSource(
        "layers.{i}.post_mlp_norm.weight",
        "model.layers.{i}.post_feedforward_layernorm.weight",
        "blk.{i}.post_ffw_norm.weight",
        gguf_transform="norm",
    ),
    WeightSource(
        "layers.{i}.mlp.gate_proj",
        "model.layers.{i}.mlp.gate_proj.weight",
        "blk.{i}.ffn_gate.weight",
        "transpose",
        "transpose",
    ),
    WeightSource(
        "layers.{i}.mlp.up_proj",
        "model.layers.{i}.mlp.up_proj.weight",
        "blk.{i}.ffn_up.weight",
        "transpose",
        "transpose",
    ),
    WeightSource(
        "layers.{i}.mlp.down_proj",
        "model.layers.{i}.mlp.down_proj.weight",
        "blk.{i}.ffn_down.weight",
        "transpose",
        "transpose",
    ),
    WeightSource("final_norm.weight", "model.norm.weight", "output_norm.weight", gguf_transform="norm"),
    WeightSource("lm_head", "lm_head.weight", "output.weight", "transpose", "transpose"),
    WeightSource("tied_lm_head", "model.embed_tokens.weight", "token_embd.weight", "transpose", "transpose"),
)

STACKED_PARAMS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "layers.{i}.attn.kv_proj": ("layers.{i}.attn.k_proj", "layers.{i}.attn.v_proj"),
        "layers.{i}.mlp.gate_up_proj": ("layers.{i}.mlp.gate_proj", "layers.{i}.mlp.up_proj"),
    }
)
"""Feature-major float models stack projections that read the same input into one [parts, out, in]
parameter (see `decoder._stacked_projection`): each part is loaded by its own row above."""

QUANTIZED_PARTS: Mapping[str, int] = MappingProxyType({"kernel": 0, "scale": 1})
"""The parameters of an int8 projection -> their index in `quantize_per_channel`'s (kernel, scale)."""


def _pattern_key(param_path: str) -> tuple[str, int | None]:
    """'layers.3.attn.q_proj' -> ('layers.{i}.attn.q_proj', 3)."""
    parts = param_path.split(".")
    if len(parts) > 1 and parts[0] == "layers" and parts[1].isdigit():
        return "layers.{i}." + ".".join(parts[2:]), int(parts[1])
    return param_path, None


_BY_PARAM = {row.param: row for row in WEIGHT_MAP}


def stacked_parts(param_path: str) -> list[str] | None:
    """The parameters a stacked one is made of, in stacking order ('layers.3.mlp.gate_up_proj' ->
    ['layers.3.mlp.gate_proj', 'layers.3.mlp.up_proj']), or None for any other parameter."""
    pattern, layer = _pattern_key(param_path)
    parts = STACKED_PARAMS.get(pattern)
    if parts is None:
        return None
    return [part.replace("{i}", str(layer)) for part in parts]


def source_for(param_path: str) -> tuple[WeightSource, int | None, str | None]:
    """The map row for one flattened parameter path, its layer index if it has one, and which part of an
    int8 projection it is (a `QUANTIZED_PARTS` key), or None for a tensor loaded as it is."""
    pattern, layer = _pattern_key(param_path)
    base, _, part = pattern.rpartition(".")
    if pattern not in _BY_PARAM and part in QUANTIZED_PARTS and base in _BY_PARAM:
        return _BY_PARAM[base], layer, part
    if pattern not in _BY_PARAM:
        raise KeyError(f"no checkpoint mapping for parameter '{param_path}'")
    return _BY_PARAM[pattern], layer, None


def apply_transform(array: np.ndarray, transform: str, cfg: ModelConfig) -> np.ndarray:
    """Reshape a stored tensor into our parameter layout."""
    if transform == "copy":
        return array
    if transform == "transpose":
        return array.T
    if transform == "norm":
        return array - np.float32(cfg.norm_weight_offset) if cfg.norm_weight_offset else array
    if transform in ("unrope_q", "unrope_k"):
        if cfg.architecture not in ("llama", "mistral"):  # llama.cpp permutes only Llama-architecture Q/K
            return array.T
        heads = cfg.num_heads if transform == "unrope_q" else cfg.num_kv_heads
        return unpermute_rope_rows(array, heads).T
    raise ValueError(f"unknown weight transform '{transform}'")


def unpermute_rope_rows(weight: np.ndarray, heads: int) -> np.ndarray:
    """Inverse of llama.cpp's per-head row interleave of a [heads * H, in] projection."""
    rows = weight.shape[0]
    head_dim = rows // heads
    return weight.reshape(heads, head_dim // 2, 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)
