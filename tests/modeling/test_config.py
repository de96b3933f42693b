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
    with pytest.raises(ModelLoadError, match="supported: llama, mistral, qwen2, qwen3"):
        ModelConfig.from_hf_config({**BASE, "model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]})


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
