"""Each supported family, as a tiny random-weight safetensors checkpoint, matches transformers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from jaxserve.engine.buckets import BucketConfig
from jaxserve.engine.runner import ModelRunner
from jaxserve.modeling.loader import load_model
from tests.modeling.parity import all_position_logits, greedy_continuation, load_golden, small_runner
from tests.modeling.tiny_checkpoints import FAMILIES, tiny_weights, weights_digest, write_tiny_checkpoint

# float32 end to end on both sides; differences come only from summation order (measured ~1e-6).
LOGITS_ATOL = 1e-4


# Both kernel layouts: [out, in] ("feature-major", the CPU default) and [in, out] (TPU and GPU).
@pytest.mark.parametrize("feature_major", [True, False], ids=["feature_major", "row_major"])
@pytest.mark.parametrize("family", FAMILIES)
def test_tiny_family_matches_transformers(family: str, feature_major: bool, tmp_path: Path) -> None:
    golden = load_golden(f"tiny_{family}.json")
    # The checkpoint is rebuilt from a seed; the digest proves it is the one the goldens came from.
    assert weights_digest(tiny_weights(family)) == golden["weights_sha256"]
    model = load_model(write_tiny_checkpoint(family, tmp_path), "float32", feature_major=feature_major)
    assert model.source_format == "hf"

    logits = all_position_logits(model, golden["token_ids"])
    np.testing.assert_allclose(logits, np.asarray(golden["logits"], np.float32), atol=LOGITS_ATOL, rtol=0)

    runner = small_runner(model, max_model_len=64, chunk=16)
    continuation = greedy_continuation(runner, golden["token_ids"], len(golden["greedy_continuation"]))
    assert continuation == golden["greedy_continuation"]


def test_gemma3_sliding_window_holds_across_pages_and_prefill_chunks(tmp_path: Path) -> None:
    """Pages of 2 tokens and prefill chunks of 4: the 4-token window of the local layer spans pages and
    chunks, so keys older than the window must be masked by position, not by what the step wrote."""
    golden = load_golden("tiny_gemma3.json")
    model = load_model(write_tiny_checkpoint("gemma3", tmp_path), "float32")
    buckets = BucketConfig(
        max_num_seqs=1, max_model_len=32, page_size=2, prefill_chunk_sizes=(4,), min_kv_len=32
    )
    runner = ModelRunner(model, buckets, buckets.max_pages_per_seq)
    continuation = greedy_continuation(runner, golden["token_ids"], len(golden["greedy_continuation"]))
    assert continuation == golden["greedy_continuation"]
