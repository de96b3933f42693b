"""Model configuration of the decoder families, built from a Hugging Face config or GGUF metadata.

Families differ only in config fields (norm weight offset, embedding scale, post-norms, MLP activation,
per-layer attention windows and rotary bases), never in code paths keyed on the architecture name; the
constructors below are the one place that knows which family sets which field.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from jaxserve.errors import ModelLoadError

SUPPORTED_ARCHITECTURES = ("llama", "mistral", "qwen2", "qwen3", "gemma3")
"""The decoder families implemented (SmolLM2 is `llama`), as `ModelConfig.architecture` names them."""

SUPPORTED_HF_MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3", "gemma3_text")
"""Hugging Face `model_type`s we load (`gemma3_text` is Gemma3ForCausalLM, the text-only Gemma 3)."""

SUPPORTED_GGUF_ARCHITECTURES = ("llama", "mistral", "qwen2", "qwen3", "gemma3")
"""GGUF `general.architecture` values we load (llama.cpp's `gemma3` is the text decoder)."""

_FAMILY_OF_HF_MODEL_TYPE = {"gemma3_text": "gemma3"}

MLP_ACTIVATIONS = ("silu", "gelu_tanh")

SLIDING, FULL = "sliding_attention", "full_attention"
"""Per-layer attention types, spelled as transformers' `layer_types`."""

GEMMA3_SLIDING_PATTERN = 6
"""Gemma 3 (and llama.cpp, whose GGUF files do not record it): every 6th layer is global, the rest local."""

GEMMA3_LOCAL_ROPE_THETA = 10000.0
"""Gemma 3's rotary base on local (sliding) layers; HF configs call it `rope_local_base_freq`."""

SUPPORTED_ROPE_TYPES = ("default", "linear", "llama3")


@dataclass(frozen=True)
class RopeConfig:
    """Rotary position embedding parameters (theta and optional context-extension scaling)."""

    theta: float = 10000.0
    rope_type: str = "default"
    factor: float = 1.0
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_max_position_embeddings: int = 8192
    # llama.cpp stores llama3-style scaling as per-frequency divisors (`rope_freqs.weight`) instead of
    # the formula parameters; when present they replace the rope_type computation.
    freq_divisors: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if self.rope_type not in SUPPORTED_ROPE_TYPES:
            raise ModelLoadError(
                f"rope scaling type '{self.rope_type}' is not supported (supported: "
                f"{', '.join(SUPPORTED_ROPE_TYPES)})"
            )


@dataclass(frozen=True)
class ModelConfig:
    """Shape and numerics of one decoder.

    Gemma-style fields: `norm_weight_offset` (RMSNorm scales by offset + w, computed in float32),
    `embedding_scale` (embeddings are multiplied by it in the model dtype), `post_norms` (an extra norm on
    the attention and MLP outputs before each residual add), `query_pre_attn_scalar` (scores are scaled by
    its -1/2 power instead of head_dim's), and per-layer attention: `layer_types[i]` is "sliding_attention"
    (window `sliding_window`, rotary `rope_local` when set) or "full_attention" (no window, rotary `rope`).
    Empty `layer_types` means every layer is sliding when `sliding_window` is set (Mistral), else full.
    """

    architecture: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    max_position_embeddings: int
    rms_norm_eps: float = 1e-6
    rope: RopeConfig = RopeConfig()
    tie_word_embeddings: bool = False
    attention_bias: bool = False
    qk_norm: bool = False
    sliding_window: int | None = None
    layer_types: tuple[str, ...] = ()
    rope_local: RopeConfig | None = None
    mlp_activation: str = "silu"
    norm_weight_offset: float = 0.0
    embedding_scale: float = 1.0
    post_norms: bool = False
    query_pre_attn_scalar: float | None = None
    attn_logit_softcap: float | None = None
    final_logit_softcap: float | None = None

    def __post_init__(self) -> None:
        if self.architecture not in SUPPORTED_ARCHITECTURES:
            raise ModelLoadError(
                f"architecture '{self.architecture}' is not supported (supported: "
                f"{', '.join(SUPPORTED_ARCHITECTURES)})"
            )
        if self.num_heads % self.num_kv_heads:
            raise ModelLoadError(
                f"num_heads ({self.num_heads}) must be a multiple of num_kv_heads ({self.num_kv_heads})"
            )
        if self.head_dim % 2:
            raise ModelLoadError(f"head_dim must be even for rotary embeddings, got {self.head_dim}")
        if self.mlp_activation not in MLP_ACTIVATIONS:
            raise ModelLoadError(
                f"MLP activation '{self.mlp_activation}' is not supported (supported: {', '.join(MLP_ACTIVATIONS)})"
            )
        if self.layer_types:
            if len(self.layer_types) != self.num_layers:
                raise ModelLoadError(
                    f"layer_types has {len(self.layer_types)} entries for {self.num_layers} layers"
                )
            unknown = set(self.layer_types) - {SLIDING, FULL}
            if unknown:
                raise ModelLoadError(f"unknown layer types {sorted(unknown)} (known: {SLIDING}, {FULL})")
            if SLIDING in self.layer_types and not self.sliding_window:
                raise ModelLoadError("sliding_attention layers need a sliding_window")

    @property
    def q_size(self) -> int:
        return self.num_heads * self.head_dim

    @property
    def kv_size(self) -> int:
        return self.num_kv_heads * self.head_dim

    @property
    def attention_scale(self) -> float:
        """Multiplier of q.k scores: 1/sqrt(query_pre_attn_scalar) when the config sets it, else 1/sqrt(H)."""
        return float(self.query_pre_attn_scalar or self.head_dim) ** -0.5

    def layer_is_sliding(self, layer: int) -> bool:
        if self.layer_types:
            return self.layer_types[layer] == SLIDING
        return self.sliding_window is not None

    def layer_window(self, layer: int) -> int | None:
        """The attention window of one layer (keys older than it are masked), or None for full attention."""
        return self.sliding_window if self.layer_is_sliding(layer) else None

    def layer_rope(self, layer: int) -> RopeConfig:
        """The rotary parameters of one layer: local layers have their own base when the config has one."""
        if self.rope_local is not None and self.layer_is_sliding(layer):
            return self.rope_local
        return self.rope

    @classmethod
    def from_hf_config(cls, hf: Mapping[str, Any]) -> ModelConfig:
        """Build from a parsed Hugging Face `config.json` (transformers 4.x or 5.x layout)."""
        model_type = hf.get("model_type", "")
        if model_type not in SUPPORTED_HF_MODEL_TYPES:
            archs = hf.get("architectures") or [model_type]
            raise ModelLoadError(
                f"model_type '{model_type}' ({', '.join(archs)}) is not supported (supported: "
                f"{', '.join(SUPPORTED_HF_MODEL_TYPES)})"
            )
        family = _FAMILY_OF_HF_MODEL_TYPE.get(model_type, model_type)
        gemma = family == "gemma3"
        num_heads = int(hf["num_attention_heads"])
        hidden = int(hf["hidden_size"])
        head_dim = hf.get("head_dim") or hidden // num_heads
        max_positions = int(hf.get("max_position_embeddings", 2048))
        rope_context = int(hf.get("max_position_embeddings", 8192))  # llama3 rope's default original context
        # transformers 5 folds rope_theta and rope_scaling into `rope_parameters`; for models with local and
        # global layers (Gemma 3) it is a dict per layer type.
        rope_params = dict(hf.get("rope_parameters") or hf.get("rope_scaling") or {})
        rope_local = None
        if FULL in rope_params or SLIDING in rope_params:
            rope = _hf_rope(dict(rope_params.get(FULL) or {}), hf, rope_context)
            local = dict(rope_params.get(SLIDING) or {})
            local.setdefault("rope_theta", hf.get("rope_local_base_freq", GEMMA3_LOCAL_ROPE_THETA))
            rope_local = _hf_rope(local, {}, rope_context)
        else:
            rope = _hf_rope(rope_params, hf, rope_context)
            if gemma:  # transformers 4 layout: the global rope is rope_theta + rope_scaling
                rope_local = RopeConfig(theta=float(hf.get("rope_local_base_freq", GEMMA3_LOCAL_ROPE_THETA)))
        sliding_window = hf.get("sliding_window")
        if family in ("qwen2", "qwen3") and not hf.get("use_sliding_window", False):
            sliding_window = None  # Qwen configs carry a window size even when it is switched off.
        layer_types: tuple[str, ...] = tuple(hf.get("layer_types") or ())
        if gemma and not layer_types:  # older Gemma 3 configs give only the pattern
            pattern = int(hf.get("sliding_window_pattern") or GEMMA3_SLIDING_PATTERN)
            layer_types = _gemma3_layer_types(int(hf["num_hidden_layers"]), pattern)
        if not sliding_window:
            layer_types = ()  # no layer can slide (transformers 5 Qwen configs list all-full layer types)
        activation = str(hf.get("hidden_activation") or hf.get("hidden_act") or "silu")
        return cls(
            architecture=family,
            vocab_size=int(hf["vocab_size"]),
            hidden_size=hidden,
            intermediate_size=int(hf["intermediate_size"]),
            num_layers=int(hf["num_hidden_layers"]),
            num_heads=num_heads,
            num_kv_heads=int(hf.get("num_key_value_heads") or num_heads),
            head_dim=int(head_dim),
            max_position_embeddings=max_positions,
            rms_norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
            rope=rope,
            # Gemma ties its embeddings unless the config says otherwise (transformers' default too).
            tie_word_embeddings=bool(hf.get("tie_word_embeddings", gemma)),
            attention_bias=bool(hf.get("attention_bias", family == "qwen2")),
            qk_norm=family in ("qwen3", "gemma3"),
            sliding_window=int(sliding_window) if sliding_window else None,
            layer_types=layer_types,
            rope_local=rope_local,
            mlp_activation=_HF_ACTIVATIONS.get(activation, activation),
            norm_weight_offset=1.0 if gemma else 0.0,
            embedding_scale=math.sqrt(hidden) if gemma else 1.0,
            post_norms=gemma,
            query_pre_attn_scalar=float(hf["query_pre_attn_scalar"])
            if hf.get("query_pre_attn_scalar")
            else None,
            attn_logit_softcap=_optional_float(hf.get("attn_logit_softcapping")),
            final_logit_softcap=_optional_float(hf.get("final_logit_softcapping")),
        )

    @classmethod
    def from_gguf(
        cls,
        metadata: Mapping[str, Any],
        tensor_names: set[str],
        rope_freq_divisors: tuple[float, ...] | None = None,
    ) -> ModelConfig:
        """Build from GGUF key/value metadata (already decoded to Python values) and its tensor names."""
        arch = str(metadata.get("general.architecture", ""))
        if arch not in SUPPORTED_GGUF_ARCHITECTURES:
            raise ModelLoadError(
                f"GGUF architecture '{arch}' is not supported (supported: {', '.join(SUPPORTED_GGUF_ARCHITECTURES)})"
            )
        gemma = arch == "gemma3"

        def key(name: str, default: Any = None) -> Any:
            return metadata.get(f"{arch}.{name}", default)

        hidden = int(key("embedding_length"))
        num_heads = int(key("attention.head_count"))
        num_kv_heads = key("attention.head_count_kv", num_heads)
        if isinstance(num_kv_heads, list | tuple):  # per-layer list in some files; uniform here
            if len(set(num_kv_heads)) != 1:
                raise ModelLoadError("GGUF files with per-layer KV head counts are not supported")
            num_kv_heads = num_kv_heads[0]
        head_dim = int(key("attention.key_length", hidden // num_heads))
        num_layers = int(key("block_count"))
        vocab_size = key("vocab_size")
        if vocab_size is None:
            tokens = metadata.get("tokenizer.ggml.tokens")
            if tokens is None:
                raise ModelLoadError("GGUF file has neither a vocab_size nor a token list")
            vocab_size = len(tokens)
        scaling_type = key("rope.scaling.type", "none")
        rope_type = {"none": "default", "linear": "linear"}.get(str(scaling_type))
        if rope_type is None:
            raise ModelLoadError(f"GGUF rope scaling type '{scaling_type}' is not supported")
        rope = RopeConfig(
            theta=float(key("rope.freq_base", 10000.0)),
            rope_type=rope_type,
            factor=float(key("rope.scaling.factor", 1.0) or 1.0),
            freq_divisors=rope_freq_divisors,
        )
        window = int(key("attention.sliding_window")) if key("attention.sliding_window") else None
        query_pre_attn_scalar = None
        if gemma:
            # What llama.cpp assumes for a gemma3 file, which does not record these: the 6-layer local/global
            # pattern, a local rotary base of 10k, and scores scaled by 1/sqrt(head_dim) except on the 62-layer
            # 27B, scaled by 1/sqrt(hidden / heads) (its HF config's query_pre_attn_scalar of 168).
            query_pre_attn_scalar = float(hidden // num_heads if num_layers == 62 else head_dim)
        return cls(
            architecture=arch,
            vocab_size=int(vocab_size),
            hidden_size=hidden,
            intermediate_size=int(key("feed_forward_length")),
            num_layers=num_layers,
            num_heads=num_heads,
            num_kv_heads=int(num_kv_heads),
            head_dim=head_dim,
            max_position_embeddings=int(key("context_length", 2048)),
            rms_norm_eps=float(key("attention.layer_norm_rms_epsilon", 1e-6)),
            rope=rope,
            tie_word_embeddings="output.weight" not in tensor_names,
            attention_bias="blk.0.attn_q.bias" in tensor_names,
            qk_norm="blk.0.attn_q_norm.weight" in tensor_names,
            sliding_window=window,
            layer_types=_gemma3_layer_types(num_layers, GEMMA3_SLIDING_PATTERN) if gemma else (),
            rope_local=RopeConfig(theta=GEMMA3_LOCAL_ROPE_THETA) if gemma else None,
            mlp_activation="gelu_tanh" if gemma else "silu",
            norm_weight_offset=1.0 if gemma else 0.0,
            embedding_scale=math.sqrt(hidden) if gemma else 1.0,
            post_norms="blk.0.post_ffw_norm.weight" in tensor_names,
            query_pre_attn_scalar=query_pre_attn_scalar,
            attn_logit_softcap=_optional_float(key("attn_logit_softcapping")),
            final_logit_softcap=_optional_float(key("final_logit_softcapping")),
        )


_HF_ACTIVATIONS = {
    "gelu_pytorch_tanh": "gelu_tanh",
    "gelu_tanh": "gelu_tanh",
    "silu": "silu",
    "swish": "silu",
}
"""transformers' activation names -> ours (`gelu_pytorch_tanh` is the tanh approximation of GELU)."""


def _hf_rope(params: Mapping[str, Any], hf: Mapping[str, Any], context: int) -> RopeConfig:
    """One RopeConfig from a rope parameter dict, falling back to top-level config fields (transformers 4)."""
    return RopeConfig(
        theta=float(params.get("rope_theta", hf.get("rope_theta", 10000.0))),
        rope_type=params.get("rope_type", params.get("type", "default")) or "default",
        factor=float(params.get("factor", 1.0)),
        low_freq_factor=float(params.get("low_freq_factor", 1.0)),
        high_freq_factor=float(params.get("high_freq_factor", 4.0)),
        original_max_position_embeddings=int(params.get("original_max_position_embeddings", context)),
    )


def _gemma3_layer_types(num_layers: int, pattern: int) -> tuple[str, ...]:
    """Every `pattern`-th layer (1-based) global, the others local: transformers' and llama.cpp's rule."""
    return tuple(FULL if (i + 1) % pattern == 0 else SLIDING for i in range(num_layers))


def _optional_float(value: Any) -> float | None:
    return float(value) if value is not None else None
