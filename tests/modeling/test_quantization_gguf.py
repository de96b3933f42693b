"""The default model (SmolLM2-135M-Instruct GGUF) quantized to int8, both methods, against float32.

The float32 reference is the golden (transformers on the same dequantised weights), which
test_parity_gguf pins jaxserve's float32 model to. For each golden prompt the quantized model's greedy
continuation (the golden's 32 tokens, through the serving path) is compared token for token, and its
next-token logits after the prompt with the golden's top-20 logits.
"""

from __future__ import annotations

import numpy as np
import pytest

from jaxserve.modeling.default_model import default_model_path
from jaxserve.modeling.loader import load_model
from jaxserve.modeling.quantization import Quantization, QuantMethod
from tests.modeling.parity import (
    first_divergence,
    greedy_continuation,
    last_position_logits,
    load_golden,
    small_runner,
)

GOLDEN = load_golden("smollm2_gguf.json")
PAD_TO = 512  # the measured configuration: another block-table width reorders float sums, and W8A8's
# continuations sit near enough to ties that one of them then diverges earlier

# Weight-only int8 is the TPU/GPU method; on CPU XLA converts the whole kernel every step (slow), so its
# continuations are checked over the first 16 tokens (both of its divergences come earlier).
GREEDY_TOKENS = {"w8a8": 32, "weight_only": 16}

# Measured on the 8 golden prompts (32 greedy tokens each; the weight-only test checks 16), 2026-11-26 on an
# AVX-512/AMX CPU. w8a8: float32's first token on 6 of 8 prompts; on the other two float32's runner-up, which
# the golden puts 0.08 and 0.58 below its top (an earlier machine picked the top on all 8); 3 of 8
# continuations equal float32's in full (2 on the earlier machine). Weight-only: the first token on all 8,
# 6 of 8 continuations in full (the others diverge after 3 and 5 tokens). Max |logit - float32| after each
# prompt over the golden's top 20 logits (magnitude ~25): w8a8 1.57 (1.31 earlier), weight-only 0.69; over
# the whole vocabulary (against jaxserve's float32 model, not asserted here to spare a third model): w8a8
# 2.85, weight-only 1.60.
# Which w8a8 continuations run in full depends on the decode attention's summation order, not on its
# accuracy (every implementation matches the reference within 1e-5): 2026-11-27, first divergences over the
# 8 prompts with the native kernel [6, 2, 7, 0, 3, 12, 19, -] (1 full; [0, 11, 8, 0, 5, -, 19, 18] with it on
# decode steps only), the chunked decode path [0, 11, 8, 0, -, -, 12, -] (3), the pure-JAX reference
# [0, 11, 21, 0, 7, 12, 19, 13] (0).
# So what is asserted of the continuations is how many tokens each keeps float32's before it first differs,
# summed over the 8 prompts: a near-tie flipping late in one continuation moves that sum by a few tokens,
# where it moves the count of full matches by one. 2026-11-27, after prompt chunks' attention moved to query
# blocks (another summation order), w8a8 keeps 65 of 256 ([6, 2, 17, 0, 7, 12, 8, 13], none in full; first
# tokens 7 of 8), 81 before ([6, 2, 7, 0, 3, 12, 19, -]). For comparison, llama.cpp's Q8_0 of the same file
# keeps 164 ([0, -, 24, 18, 5, -, 21, -], 3 in full) and its F32 224 (6 in full;
# `benchmarks/llamacpp_parity.py`). Weight-only keeps 104 of 128.
MATCHED_TOKENS_AT_LEAST = {"w8a8": 48, "weight_only": 96}
FIRST_TOKEN_MATCHES_AT_LEAST = {"w8a8": 6, "weight_only": 8}
TOP_LOGITS_ATOL = {"w8a8": 2.0, "weight_only": 1.0}


@pytest.mark.parametrize("method", ["w8a8", "weight_only"])
def test_int8_smollm2_greedy_tracks_float32(method: QuantMethod) -> None:
    model = load_model(default_model_path(), "float32", Quantization(method))
    runner = small_runner(model, max_model_len=PAD_TO, chunk=256)
    full_matches, first_matches, matched, divergences, deviations = 0, 0, 0, [], []
    for case in GOLDEN["cases"]:
        expected = case["greedy_continuation"][: GREEDY_TOKENS[method]]
        ours = greedy_continuation(runner, case["prompt_ids"], len(expected))
        diverged = first_divergence(ours, expected)
        full_matches += diverged is None
        matched += len(expected) if diverged is None else diverged
        divergences.append(diverged)
        logits = last_position_logits(model, case["prompt_ids"], PAD_TO)
        top_ids, top_logits = case["top_ids"], np.asarray(case["top_logits"])
        deviations.append(float(np.max(np.abs(logits[top_ids] - top_logits))))
        # The first token is float32's, or one float32 ranks within the quantization error of its top:
        # a near-tie that int8 rounding may flip.
        first = int(np.argmax(logits))
        assert first in top_ids, case["name"]
        assert top_logits[0] - top_logits[top_ids.index(first)] <= TOP_LOGITS_ATOL[method], case["name"]
        first_matches += first == top_ids[0]
    print(
        f"{method}: {matched} tokens kept, {full_matches}/{len(GOLDEN['cases'])} full matches, first token "
        f"{first_matches}, divergences {divergences}, top-20 logit deviation max {max(deviations):.3f}"
    )
    assert first_matches >= FIRST_TOKEN_MATCHES_AT_LEAST[method]
    assert matched >= MATCHED_TOKENS_AT_LEAST[method]
    assert max(deviations) <= TOP_LOGITS_ATOL[method]
