"""The default GGUF model (SmolLM2-135M-Instruct, Q4_1) matches transformers on the same weights."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from jaxserve.engine.runner import ModelRunner
from jaxserve.modeling.default_model import default_model_path
from jaxserve.modeling.loader import LoadedModel, load_model
from jaxserve.modeling.tokenizer import Tokenizer
from tests.modeling.parity import (
    first_divergence,
    greedy_continuation,
    last_position_logits,
    load_golden,
    small_runner,
    top2_gap,
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
    case = CASES[name]
    logits = last_position_logits(model, case["prompt_ids"], PAD_TO)
    top_ids = case["top_ids"][:TOP_COMPARED]
    assert list(np.argsort(-logits)[:TOP_COMPARED]) == top_ids
    np.testing.assert_allclose(logits[top_ids], case["top_logits"][:TOP_COMPARED], atol=LOGITS_ATOL, rtol=0)


@pytest.mark.parametrize("name", list(CASES))
def test_greedy_continuation_matches_transformers(name: str, runner: ModelRunner) -> None:
    case = CASES[name]
    golden = case["greedy_continuation"]
    ours = greedy_continuation(runner, case["prompt_ids"], len(golden))
    diverged = first_divergence(ours, golden)
    if diverged is not None:
        # Only a near-tie in the reference (top-2 logits closer than our tolerance) may flip a token.
        gap = top2_gap(case, diverged)
        assert gap < LOGITS_ATOL, f"diverged at token {diverged} where transformers' top-2 gap is {gap}"
