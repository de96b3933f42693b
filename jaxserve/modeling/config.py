"""Model configuration for the Llama-family decoder, built from a Hugging Face config or GGUF metadata."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from jaxserve.errors import ModelLoadError

SUPPORTED_ARCHITECTURES = ("llama", "mistral", "qwen2", "qwen3")
"""Values of HF `model_type` / GGUF `general.architecture` this decoder implements (SmolLM2 is `llama`)."""

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
    """Shape and numerics of one Llama-family decoder."""

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

    @property
    def q_size(self) -> int:
        return self.num_heads * self.head_dim

    @property
    def kv_size(self) -> int:
        return self.num_kv_heads * self.head_dim

    @classmethod
    def from_hf_config(cls, hf: Mapping[str, Any]) -> ModelConfig:
        """Build from a parsed Hugging Face `config.json` (transformers 4.x or 5.x layout)."""
        model_type = hf.get("model_type", "")
        if model_type not in SUPPORTED_ARCHITECTURES:
            archs = hf.get("architectures") or [model_type]
            raise ModelLoadError(
                f"model_type '{model_type}' ({', '.join(archs)}) is not supported (supported: "
                f"{', '.join(SUPPORTED_ARCHITECTURES)})"
            )
        num_heads = int(hf["num_attention_heads"])
        hidden = int(hf["hidden_size"])
        head_dim = hf.get("head_dim") or hidden // num_heads
        # transformers 5 folds rope_theta and rope_scaling into `rope_parameters`.
        rope_params = dict(hf.get("rope_parameters") or hf.get("rope_scaling") or {})
        theta = float(rope_params.get("rope_theta", hf.get("rope_theta", 10000.0)))
        rope_type = rope_params.get("rope_type", rope_params.get("type", "default")) or "default"
        rope = RopeConfig(
            theta=theta,
            rope_type=rope_type,
            factor=float(rope_params.get("factor", 1.0)),
            low_freq_factor=float(rope_params.get("low_freq_factor", 1.0)),
            high_freq_factor=float(rope_params.get("high_freq_factor", 4.0)),
            original_max_position_embeddings=int(
                rope_params.get("original_max_position_embeddings", hf.get("max_position_embeddings", 8192))
            ),
        )
        sliding_window = hf.get("sliding_window")
        if model_type in ("qwen2", "qwen3") and not hf.get("use_sliding_window", False):
            sliding_window = None  # Qwen configs carry a window size even when it is switched off.
        return cls(
            architecture=model_type,
            vocab_size=int(hf["vocab_size"]),
            hidden_size=hidden,
            intermediate_size=int(hf["intermediate_size"]),
            num_layers=int(hf["num_hidden_layers"]),
            num_heads=num_heads,
            num_kv_heads=int(hf.get("num_key_value_heads") or num_heads),
            head_dim=int(head_dim),
            max_position_embeddings=int(hf.get("max_position_embeddings", 2048)),
            rms_norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
            rope=rope,
            tie_word_embeddings=bool(hf.get("tie_word_embeddings", False)),
            attention_bias=bool(hf.get("attention_bias", model_type == "qwen2")),
            qk_norm=model_type == "qwen3",
            sliding_window=int(sliding_window) if sliding_window else None,
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
        if arch not in SUPPORTED_ARCHITECTURES:
            raise ModelLoadError(
                f"GGUF architecture '{arch}' is not supported (supported: {', '.join(SUPPORTED_ARCHITECTURES)})"
            )

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
        return cls(
            architecture=arch,
            vocab_size=int(vocab_size),
            hidden_size=hidden,
            intermediate_size=int(key("feed_forward_length")),
            num_layers=int(key("block_count")),
            num_heads=num_heads,
            num_kv_heads=int(num_kv_heads),
            head_dim=head_dim,
            max_position_embeddings=int(key("context_length", 2048)),
            rms_norm_eps=float(key("attention.layer_norm_rms_epsilon", 1e-6)),
            rope=rope,
            tie_word_embeddings="output.weight" not in tensor_names,
            attention_bias="blk.0.attn_q.bias" in tensor_names,
            qk_norm="blk.0.attn_q_norm.weight" in tensor_names,
            sliding_window=int(key("attention.sliding_window")) if key("attention.sliding_window") else None,
        )
