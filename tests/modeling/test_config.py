"""ModelConfig from Hugging Face configs (both transformers layouts) and from GGUF metadata."""

from __future__ import annotations

import numpy as np
import pytest

from jaxserve.errors import ModelLoadError
from jaxserve.modeling.checkpoint import GGUFCheckpoint
from jaxserve.modeling.config import ModelConfig, RopeConfig
from jaxserve.modeling.default_model import default_model_path
from jaxserve.modeling.rope import inverse_frequencies
from jaxserve.modeling.weight_map import unpermute_rope_rows

BASE = {
    "model_type": "llama",
    "vocab_size": 100,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 512,
}


def test_transformers4_rope_fields() -> None:
    cfg = ModelConfig.from_hf_config(
        {
            **BASE,
            "rope_theta": 500000.0,
            "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "original_max_position_embeddings": 8192},
        }
    )
    assert cfg.rope.theta == 500000.0 and cfg.rope.rope_type == "llama3" and cfg.rope.factor == 8.0
    assert cfg.head_dim == 16 and cfg.num_kv_heads == 2


def test_transformers5_rope_parameters() -> None:
    cfg = ModelConfig.from_hf_config({**BASE, "rope_parameters": {"rope_type": "default", "rope_theta": 1e6}})
    assert cfg.rope.theta == 1e6 and cfg.rope.rope_type == "default"


def test_qwen_window_ignored_unless_enabled() -> None:
    qwen = {**BASE, "model_type": "qwen2", "sliding_window": 4096, "use_sliding_window": False}
    assert ModelConfig.from_hf_config(qwen).sliding_window is None
    assert ModelConfig.from_hf_config(qwen).attention_bias
    assert (
        ModelConfig.from_hf_config({**BASE, "model_type": "mistral", "sliding_window": 64}).sliding_window
        == 64
    )


def test_unsupported_architecture_lists_supported_ones() -> None:
    with pytest.raises(ModelLoadError, match="supported: llama, mistral, qwen2, qwen3, gemma3_text"):
        ModelConfig.from_hf_config({**BASE, "model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]})


def test_unsupported_gguf_architecture_lists_supported_ones() -> None:
    metadata = {"general.architecture": "phi3", "phi3.embedding_length": 64}
    with pytest.raises(
        ModelLoadError, match="GGUF architecture 'phi3'.*supported: llama, mistral, qwen2, qwen3, gemma3"
    ):
        ModelConfig.from_gguf(metadata, set())


GEMMA3_TF4 = {
    **BASE,
    "model_type": "gemma3_text",
    "num_hidden_layers": 12,
    "head_dim": 256,
    "hidden_activation": "gelu_pytorch_tanh",
    "query_pre_attn_scalar": 256,
    "rope_theta": 1000000.0,
    "rope_local_base_freq": 10000.0,
    "rope_scaling": {"rope_type": "linear", "factor": 8.0},
    "sliding_window": 512,
    "sliding_window_pattern": 6,
}
"""A Gemma 3 1B-style config.json as transformers 4 wrote it (no layer_types, rope fields at the top)."""


def test_gemma3_transformers4_config_resolves_local_and_global_layers() -> None:
    cfg = ModelConfig.from_hf_config(GEMMA3_TF4)
    assert cfg.architecture == "gemma3" and cfg.tie_word_embeddings and cfg.qk_norm and cfg.post_norms
    assert [cfg.layer_window(i) for i in range(12)] == [512] * 5 + [None] + [512] * 5 + [None]
    local, global_ = cfg.layer_rope(0), cfg.layer_rope(5)
    assert (local.theta, local.rope_type) == (10000.0, "default")  # linear scaling is for global layers only
    assert (global_.theta, global_.rope_type, global_.factor) == (1e6, "linear", 8.0)
    assert cfg.mlp_activation == "gelu_tanh" and cfg.norm_weight_offset == 1.0
    assert cfg.embedding_scale == pytest.approx(8.0) and cfg.attention_scale == pytest.approx(1 / 16)


def test_gemma3_transformers5_rope_parameters_per_layer_type() -> None:
    hf = {
        k: v for k, v in GEMMA3_TF4.items() if k not in ("rope_theta", "rope_local_base_freq", "rope_scaling")
    }
    hf["layer_types"] = ["sliding_attention"] * 11 + ["full_attention"]
    hf["rope_parameters"] = {
        "full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1e6},
        "sliding_attention": {"rope_type": "default", "rope_theta": 1e4},
    }
    cfg = ModelConfig.from_hf_config(hf)
    assert cfg.layer_rope(0).theta == 1e4 and cfg.layer_rope(11).factor == 8.0
    assert [cfg.layer_window(i) for i in (0, 5, 11)] == [512, 512, None]


def test_gemma3_gguf_metadata_gets_llama_cpp_defaults() -> None:
    metadata = {
        "general.architecture": "gemma3",
        "gemma3.embedding_length": 640,
        "gemma3.block_count": 18,
        "gemma3.feed_forward_length": 2048,
        "gemma3.attention.head_count": 4,
        "gemma3.attention.head_count_kv": 1,
        "gemma3.attention.key_length": 256,
        "gemma3.attention.sliding_window": 512,
        "gemma3.rope.freq_base": 1e6,
        "gemma3.context_length": 32768,
        "tokenizer.ggml.tokens": ["t"] * 100,
    }
    names = {"blk.0.attn_q_norm.weight", "blk.0.post_ffw_norm.weight"}
    cfg = ModelConfig.from_gguf(metadata, names)
    assert cfg.layer_types.count("full_attention") == 3 and cfg.layer_window(5) is None
    assert cfg.rope_local is not None and cfg.rope_local.theta == 1e4 and cfg.rope.theta == 1e6
    assert cfg.query_pre_attn_scalar == 256 and cfg.tie_word_embeddings and cfg.post_norms


def test_layer_types_without_a_window_are_rejected() -> None:
    with pytest.raises(ModelLoadError, match="sliding_window"):
        ModelConfig(
            architecture="gemma3",
            vocab_size=10,
            hidden_size=8,
            intermediate_size=8,
            num_layers=1,
            num_heads=1,
            num_kv_heads=1,
            head_dim=8,
            max_position_embeddings=16,
            layer_types=("sliding_attention",),
        )


def test_unsupported_rope_type_is_a_clear_error() -> None:
    with pytest.raises(ModelLoadError, match="yarn"):
        ModelConfig.from_hf_config({**BASE, "rope_scaling": {"rope_type": "yarn", "factor": 4.0}})


def test_default_gguf_config() -> None:
    cfg = GGUFCheckpoint(default_model_path()).config
    assert (cfg.architecture, cfg.num_layers, cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads) == (
        "llama",
        30,
        576,
        9,
        3,
    )
    assert cfg.tie_word_embeddings and cfg.vocab_size == 49152 and cfg.rope.theta == 100000.0


def test_llama3_scaling_keeps_high_and_slows_low_frequencies() -> None:
    plain = inverse_frequencies(RopeConfig(theta=500000.0), 128)
    scaled = inverse_frequencies(
        RopeConfig(theta=500000.0, rope_type="llama3", factor=8.0, original_max_position_embeddings=8192), 128
    )
    assert scaled[0] == pytest.approx(plain[0])  # short wavelengths untouched
    assert scaled[-1] == pytest.approx(plain[-1] / 8.0)  # long wavelengths slowed by the factor


def test_unpermute_inverts_llama_cpp_interleave() -> None:
    heads, head_dim, width = 3, 8, 5
    weight = np.arange(heads * head_dim * width, dtype=np.float32).reshape(heads * head_dim, width)
    # llama.cpp's converter: within each head, rows (i, i + H/2) become adjacent.
    permuted = weight.reshape(heads, 2, head_dim // 2, width).swapaxes(1, 2).reshape(weight.shape)
    np.testing.assert_array_equal(unpermute_rope_rows(permuted, heads), weight)
