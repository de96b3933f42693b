"""The default GGUF model (SmolLM2-135M-Instruct, Q4_1) matches transformers on the same weights."""

from __future__ import annotations

from typing import Any

import pytest

from jaxserve.engine.runner import ModelRunner
from jaxserve.modeling.default_model import default_model_path
from jaxserve.modeling.loader import LoadedModel, load_model
from jaxserve.modeling.tokenizer import Tokenizer
from tests.modeling.parity import (
    assert_greedy_matches,
    assert_top_logits_match,
    load_golden,
    small_runner,
)

GOLDEN = load_golden("smollm2_gguf.json")
CASES = {case["name"]: case for case in GOLDEN["cases"]}
# Both sides dequantise the same Q4_1/Q8_0 blocks to float32 and run float32; the gap is summation order
# over 30 layers (measured max |diff| ~1e-4 on logits of magnitude ~40).
LOGITS_ATOL = 2e-3
TOP_COMPARED = 5
PAD_TO = 512


@pytest.fixture(scope="module")
def model() -> LoadedModel:
    return load_model(default_model_path(), "float32")


@pytest.fixture(scope="module")
def runner(model: LoadedModel) -> ModelRunner:
    return small_runner(model, max_model_len=PAD_TO, chunk=256)


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    return Tokenizer.from_path(default_model_path())


@pytest.mark.parametrize("name", list(CASES))
def test_prompt_ids_match_transformers(name: str, tokenizer: Tokenizer) -> None:
    case: dict[str, Any] = CASES[name]
    assert tokenizer.apply_chat_template(case["messages"], add_generation_prompt=True) == case["prompt_ids"]


@pytest.mark.parametrize("name", list(CASES))
def test_top_logits_match_transformers(name: str, model: LoadedModel) -> None:
    assert_top_logits_match(model, CASES[name], pad_to=PAD_TO, top=TOP_COMPARED, atol=LOGITS_ATOL)


@pytest.mark.parametrize("name", list(CASES))
def test_greedy_continuation_matches_transformers(name: str, runner: ModelRunner) -> None:
    assert_greedy_matches(runner, CASES[name], atol=LOGITS_ATOL)
