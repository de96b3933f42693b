"""The batched sampler against NumPy references."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from jaxserve.errors import InvalidRequest
from jaxserve.sampling.params import SamplingParams
from jaxserve.sampling.sampler import SamplingBatch, _top_p_filter, sample

jitted_sample = jax.jit(sample)


def _batch(params: list[SamplingParams], seeds: list[int], steps: list[int] | None = None) -> SamplingBatch:
    return SamplingBatch.from_params(params, seeds, steps or [0] * len(params))


def test_greedy_rows_take_exact_argmax() -> None:
    logits = np.random.default_rng(0).normal(size=(4, 1000)).astype(np.float32)
    tokens = jitted_sample(logits, _batch([SamplingParams(temperature=0.0)] * 4, [1, 2, 3, 4]))
    np.testing.assert_array_equal(np.asarray(tokens), logits.argmax(-1))


def test_top_p_filter_keeps_smallest_nucleus() -> None:
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(3, 50)).astype(np.float32) * 3
    top_p = np.asarray([0.5, 0.9, 1e-6], np.float32)
    filtered = np.asarray(_top_p_filter(logits, top_p))
    for row in range(3):
        probs = np.exp(logits[row] - logits[row].max())
        probs /= probs.sum()
        order = np.argsort(-probs)
        mass_before = np.cumsum(probs[order]) - probs[order]
        expected_kept = set(order[mass_before < top_p[row]].tolist())
        kept = set(np.nonzero(np.isfinite(filtered[row]))[0].tolist())
        assert kept == expected_kept
    assert np.isfinite(filtered[2]).sum() == 1  # a tiny top_p still keeps the most likely token


def test_sampled_frequencies_follow_temperature() -> None:
    """Draws from softmax(logits / T) over a 4-token vocabulary match the expected frequencies."""
    logits = np.log(np.asarray([0.1, 0.2, 0.3, 0.4], np.float32))
    temperature = 2.0
    n = 4000
    params = [SamplingParams(temperature=temperature)] * n
    tokens = np.asarray(jitted_sample(np.tile(logits, (n, 1)), _batch(params, list(range(n)))))
    expected = np.exp(logits / temperature)
    expected /= expected.sum()
    observed = np.bincount(tokens, minlength=4) / n
    chi2 = n * np.sum((observed - expected) ** 2 / expected)
    assert chi2 < 16.27  # p = 0.001 for 3 degrees of freedom


def test_seeded_row_is_reproducible_whatever_shares_its_batch() -> None:
    rng = np.random.default_rng(2)
    logits = rng.normal(size=(1, 500)).astype(np.float32)
    seeded = SamplingParams(temperature=1.0, seed=42)
    alone = jitted_sample(logits, _batch([seeded], [42], [7]))
    others = rng.normal(size=(3, 500)).astype(np.float32)
    mixed_logits = np.concatenate([others[:2], logits, others[2:]])
    mixed = jitted_sample(
        mixed_logits,
        _batch(
            [SamplingParams(temperature=0.7), SamplingParams(temperature=0.0), seeded, SamplingParams()],
            [5, 6, 42, 9],
            [1, 2, 7, 3],
        ),
    )
    assert int(mixed[2]) == int(alone[0])


def test_different_steps_draw_differently() -> None:
    logits = np.zeros((64, 1000), np.float32)
    tokens = jitted_sample(logits, _batch([SamplingParams()] * 64, [3] * 64, list(range(64))))
    assert len(set(np.asarray(tokens).tolist())) > 50


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"temperature": -0.1}, "temperature"),
        ({"top_p": 0.0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"stop": ("",)}, "stop"),
    ],
)
def test_invalid_params_name_the_field(kwargs: dict, param: str) -> None:
    with pytest.raises(InvalidRequest) as err:
        SamplingParams(**kwargs)
    assert err.value.param == param
