"""tests/modeling/tiny_checkpoints.py: deterministic, complete, and still the weights the goldens were made from."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.modeling.tiny_checkpoints import (
    FAMILIES,
    FAMILY_SPECS,
    tiny_weights,
    weights_digest,
    write_tiny_checkpoint,
)

GOLDENS = Path(__file__).resolve().parents[1] / "goldens"


@pytest.mark.parametrize("family", FAMILIES)
def test_goldens_were_made_from_these_weights(family: str) -> None:
    golden = json.loads((GOLDENS / f"tiny_{family}.json").read_text())
    assert golden["weights_sha256"] == weights_digest(tiny_weights(family)), (
        "tiny_checkpoints changed: rerun `python tools/make_goldens.py --out tests/goldens`"
    )
    assert len(golden["logits"]) == len(golden["token_ids"]) == 12
    assert all(len(row) == 256 for row in golden["logits"])
    assert len(golden["greedy_continuation"]) == 16


def test_families_cover_the_decoder_variants() -> None:
    assert set(FAMILIES) == {"llama3", "smollm2", "mistral", "mistral_swa", "qwen2", "qwen3", "gemma3"}
    assert {name for name, spec in FAMILY_SPECS.items() if spec.tied} == {"smollm2", "qwen2", "gemma3"}
    gemma = tiny_weights("gemma3")
    assert "model.layers.1.pre_feedforward_layernorm.weight" in gemma
    assert "model.layers.1.post_feedforward_layernorm.weight" in gemma
    assert abs(float(gemma["model.norm.weight"].mean())) < 0.1  # Gemma scales by 1 + w: w is near 0
    assert "q_proj.bias" in " ".join(tiny_weights("qwen2"))
    assert tiny_weights("qwen3")["model.layers.0.self_attn.q_proj.weight"].shape == (128, 64)  # 4 heads x 32


@pytest.mark.parametrize("family", FAMILIES)
def test_written_checkpoint_matches_its_config(family: str, tmp_path: Path) -> None:
    from safetensors.numpy import load_file

    write_tiny_checkpoint(family, tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    weights = load_file(str(tmp_path / "model.safetensors"))
    assert weights_digest(weights) == weights_digest(tiny_weights(family))
    assert config["tie_word_embeddings"] == ("lm_head.weight" not in weights)
    assert config["vocab_size"] == 256 and config["hidden_size"] == 64 and config["num_hidden_layers"] == 2
    if family == "llama3":
        assert config["rope_parameters"]["rope_type"] == "llama3"
    if family == "qwen3":
        assert config["head_dim"] == 32
    if family == "gemma3":
        assert (
            config["layer_types"] == ["sliding_attention", "full_attention"] and config["sliding_window"] == 4
        )
        assert config["rope_parameters"]["sliding_attention"]["rope_theta"] == 100.0
