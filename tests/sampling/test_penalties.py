"""Repetition, frequency and presence penalties against vLLM's formulas; output counting."""

from __future__ import annotations

import jax
import numpy as np

from jaxserve.sampling.batch import SamplingBatch
from jaxserve.sampling.params import SamplingParams
from jaxserve.sampling.penalties import any_penalty, apply_penalties
from tests.sampling import reference

jitted_penalties = jax.jit(apply_penalties)


def test_penalties_match_reference_including_negative_logits() -> None:
    rng = np.random.default_rng(0)
    rows, vocab = 4, 50
    logits = (rng.normal(size=(rows, vocab)) * 3).astype(np.float32)  # about half negative
    prompt_mask = rng.random((rows, vocab)) < 0.2
    counts = rng.integers(0, 4, size=(rows, vocab)).astype(np.int32) * (rng.random((rows, vocab)) < 0.3)
    params = [
        SamplingParams(repetition_penalty=1.3, frequency_penalty=0.4, presence_penalty=0.7),
        SamplingParams(repetition_penalty=0.8),  # < 1 encourages repeats: positive up, negative down
        SamplingParams(frequency_penalty=-1.5, presence_penalty=-0.5),
        SamplingParams(),  # no penalties: untouched
    ]
    batch = SamplingBatch.from_params(params, [0] * rows, [0] * rows)
    out = np.asarray(jitted_penalties(logits, prompt_mask, counts, batch))
    expected = reference.penalties(
        logits,
        prompt_mask,
        counts,
        np.asarray([1.3, 0.8, 1.0, 1.0]),
        np.asarray([0.4, 0.0, -1.5, 0.0]),
        np.asarray([0.7, 0.0, -0.5, 0.0]),
    )
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(out[3], logits[3])  # bit-identical
    seen = prompt_mask[0] | (counts[0] > 0)
    negative = seen & (logits[0] < 0) & (counts[0] == 0)
    assert negative.any()
    np.testing.assert_allclose(out[0][negative], logits[0][negative] * 1.3, rtol=1e-6)


def test_any_penalty_detects_each_kind() -> None:
    for params, expected in [
        (SamplingParams(), False),
        (SamplingParams(repetition_penalty=1.01), True),
        (SamplingParams(frequency_penalty=0.1), True),
        (SamplingParams(presence_penalty=-0.1), True),
    ]:
        batch = SamplingBatch.from_params([None, params], [0, 0], [0, 0])
        assert bool(any_penalty(batch)) is expected
