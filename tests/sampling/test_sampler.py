"""The whole sampler: transform order, greedy exactness, sampled frequencies, seeds, logprobs.

Two shapes only ([4, 1000] and [3000, 12], plus [1, 1000] for a row alone), each compiled once.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax
import numpy as np
import pytest

from jaxserve.sampling.batch import SamplingBatch
from jaxserve.sampling.bitmask import allowed_bitmask, ban, full_bitmask
from jaxserve.sampling.params import SamplingParams
from jaxserve.sampling.sampler import SampleResult, sample
from jaxserve.sampling.slot_state import SlotSamplingState
from tests.sampling import reference

jitted_sample = jax.jit(sample)

# p = 0.001 critical values of the chi-square distribution by degrees of freedom.
CHI2_CRITICAL = [10.83, 13.82, 16.27, 18.47, 20.52, 22.46, 24.32, 26.12, 27.88, 29.59, 31.26]
DRAWS = 3000
PROBS = np.asarray([0.3, 0.2, 0.15, 0.1, 0.08, 0.06, 0.04, 0.03, 0.02, 0.01, 0.005, 0.005])
PERMUTATION = np.random.default_rng(7).permutation(PROBS.size)  # likely tokens are not the low ids
SMALL_LOGITS = np.log(PROBS[PERMUTATION]).astype(np.float32)  # [12]


def run(
    logits: np.ndarray,
    params: Sequence[SamplingParams | None],
    seeds: list[int] | None = None,
    steps: list[int] | None = None,
    *,
    bitmask: np.ndarray | None = None,
    bias: np.ndarray | None = None,
    prompt_mask: np.ndarray | None = None,
    counts: np.ndarray | None = None,
) -> SampleResult:
    """`sample` with row i in slot i of a state holding `bias`, `prompt_mask` and `counts` ([B, V]; zeros
    if not given). As the runner marks them: a row with a non-zero bias row is biased, and one whose
    bitmask row is not all-allowed is restricted."""
    rows, vocab = logits.shape
    full = np.tile(full_bitmask(vocab), (rows, 1))
    bitmask = full if bitmask is None else bitmask
    restricted = np.any(bitmask != full, axis=-1).tolist()
    batch = SamplingBatch.from_params(params, seeds or list(range(rows)), steps or [0] * rows, restricted)
    bias = np.zeros((rows, vocab), np.float32) if bias is None else bias
    batch = dataclasses.replace(batch, biased=np.asarray(batch.biased) | np.any(bias != 0, axis=-1))
    state = SlotSamplingState(
        bias=bias,
        prompt_mask=np.zeros((rows, vocab), np.bool_) if prompt_mask is None else prompt_mask,
        output_counts=np.zeros((rows, vocab), np.int32) if counts is None else counts,
    )
    return jitted_sample(
        logits,
        batch,
        bitmask,
        state,
        np.arange(rows, dtype=np.int32),
    )


def assert_follows(tokens: np.ndarray, probs: np.ndarray) -> None:
    """Tokens with probability 0 never appear; the others pass a chi-square test at p = 0.001 (bins
    expecting fewer than 5 draws pooled)."""
    assert set(np.unique(tokens).tolist()) <= set(np.flatnonzero(probs > 0).tolist())
    observed = np.bincount(tokens, minlength=probs.size).astype(np.float64)
    expected = probs * tokens.size
    big = expected >= 5
    observed = np.append(observed[big], observed[~big & (probs > 0)].sum())
    expected = np.append(expected[big], expected[~big & (probs > 0)].sum())
    if expected[-1] == 0:
        observed, expected = observed[:-1], expected[:-1]
    statistic = float(np.sum((observed - expected) ** 2 / expected))
    assert statistic < CHI2_CRITICAL[expected.size - 2], (statistic, observed, expected)


def draws(
    params: SamplingParams, *, bitmask: np.ndarray | None = None, bias: np.ndarray | None = None
) -> np.ndarray:
    result = run(np.tile(SMALL_LOGITS, (DRAWS, 1)), [params] * DRAWS, bitmask=bitmask, bias=bias)
    return np.asarray(result.tokens)


def test_frequencies_follow_temperature() -> None:
    assert_follows(draws(SamplingParams(temperature=0.7)), reference.softmax(SMALL_LOGITS / 0.7))
    assert_follows(draws(SamplingParams(temperature=1.8)), reference.softmax(SMALL_LOGITS / 1.8))


def test_frequencies_follow_top_k() -> None:
    keep = reference.top_k_keep(SMALL_LOGITS, 4)
    assert_follows(draws(SamplingParams(top_k=4)), reference.softmax(reference.filtered(SMALL_LOGITS, keep)))


def test_frequencies_follow_top_p() -> None:
    keep = reference.top_p_keep(SMALL_LOGITS, 0.6)
    assert keep.sum() == 3
    assert_follows(
        draws(SamplingParams(top_p=0.6)), reference.softmax(reference.filtered(SMALL_LOGITS, keep))
    )


def test_frequencies_follow_min_p() -> None:
    scaled = SMALL_LOGITS / 1.5  # min-p comes after temperature
    keep = reference.min_p_keep(scaled, 0.1)
    assert 3 < keep.sum() < 12
    tokens = draws(SamplingParams(temperature=1.5, min_p=0.1))
    assert_follows(tokens, reference.softmax(reference.filtered(scaled, keep)))


def test_frequencies_follow_all_filters_in_order() -> None:
    scaled = SMALL_LOGITS / 1.3
    after_min_p = reference.filtered(scaled, reference.min_p_keep(scaled, 0.02))
    after_k = reference.filtered(after_min_p, reference.top_k_keep(after_min_p, 7))
    expected = reference.filtered(after_k, reference.top_p_keep(after_k, 0.8))
    tokens = draws(SamplingParams(temperature=1.3, min_p=0.02, top_k=7, top_p=0.8))
    assert_follows(tokens, reference.softmax(expected))


def test_bitmask_restricts_draws_to_allowed_tokens() -> None:
    allowed = PERMUTATION[[0, 3, 6, 9, 11]]  # tokens of probability 0.3, 0.1, 0.04, 0.01, 0.005
    bitmask = np.tile(allowed_bitmask(12, allowed), (DRAWS, 1))
    keep = np.zeros(12, bool)
    keep[allowed] = True
    tokens = draws(SamplingParams(temperature=1.0), bitmask=bitmask)
    assert_follows(tokens, reference.softmax(reference.filtered(SMALL_LOGITS, keep)))


def test_bias_shifts_the_sampled_distribution() -> None:
    bias = np.zeros((DRAWS, 12), np.float32)
    bias[:, PERMUTATION[-1]] = 4.0
    tokens = draws(SamplingParams(temperature=1.0), bias=bias)
    assert_follows(tokens, reference.softmax(SMALL_LOGITS + bias[0]))


def mixed_inputs(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    rows, vocab = 4, 1000
    logits = (rng.normal(size=(rows, vocab)) * 3).astype(np.float32)
    bias = np.zeros((rows, vocab), np.float32)
    bias[np.arange(rows), rng.integers(0, vocab, rows)] = 5.0
    prompt_mask = rng.random((rows, vocab)) < 0.05
    counts = (rng.integers(0, 3, (rows, vocab)) * (rng.random((rows, vocab)) < 0.05)).astype(np.int32)
    bitmask = np.stack([ban(full_bitmask(vocab), [int(np.argmax(logits[b]))]) for b in range(rows)])
    return {"logits": logits, "bias": bias, "prompt_mask": prompt_mask, "counts": counts, "bitmask": bitmask}


def run_mixed(inputs: dict[str, np.ndarray], params: Sequence[SamplingParams | None]) -> SampleResult:
    """`run` on mixed_inputs: their logits with their mask, bias, prompt tokens and output counts."""
    return run(
        inputs["logits"],
        params,
        bitmask=inputs["bitmask"],
        bias=inputs["bias"],
        prompt_mask=inputs["prompt_mask"],
        counts=inputs["counts"],
    )


def expected_greedy(inputs: dict[str, np.ndarray], params: list[SamplingParams]) -> np.ndarray:
    rows, vocab = inputs["logits"].shape
    allowed = np.ones((rows, vocab), bool)
    for b in range(rows):
        allowed[b, int(np.argmax(inputs["logits"][b]))] = False
    x = np.where(allowed, inputs["logits"], -np.inf) + inputs["bias"]
    x = reference.penalties(
        x,
        inputs["prompt_mask"],
        inputs["counts"],
        np.asarray([p.repetition_penalty for p in params]),
        np.asarray([p.frequency_penalty for p in params]),
        np.asarray([p.presence_penalty for p in params]),
    )
    return np.argmax(x, axis=-1)


@pytest.mark.parametrize(
    "params",
    [
        [SamplingParams(temperature=0.0)] * 4,  # all greedy, no penalties
        [SamplingParams(temperature=0.0, repetition_penalty=1.5, frequency_penalty=0.5)] * 2
        + [SamplingParams(temperature=0.0, presence_penalty=-1.0)] * 2,  # all greedy, penalised
        [
            SamplingParams(temperature=0.0, repetition_penalty=0.7),
            SamplingParams(temperature=0.9, top_k=5),
            SamplingParams(temperature=0.0, frequency_penalty=1.0),
            SamplingParams(temperature=0.5, top_p=0.5, presence_penalty=2.0),
        ],  # mixed: greedy rows beside random ones
    ],
)
def test_greedy_rows_take_exact_argmax_after_mask_bias_and_penalties(params: list[SamplingParams]) -> None:
    inputs = mixed_inputs(0)
    result = run_mixed(inputs, params)
    greedy = [b for b, p in enumerate(params) if p.greedy]
    np.testing.assert_array_equal(np.asarray(result.tokens)[greedy], expected_greedy(inputs, params)[greedy])


def test_seeded_row_is_reproducible_whatever_shares_its_batch() -> None:
    inputs = mixed_inputs(1)
    seeded = SamplingParams(temperature=0.9, top_k=50, top_p=0.9, min_p=0.01, repetition_penalty=1.1, seed=42)
    others = [
        SamplingParams(temperature=1.0, top_p=0.95),  # flat enough to send its row to the bisection
        SamplingParams(temperature=0.0, frequency_penalty=1.0),
        SamplingParams(temperature=0.3, top_k=400, min_p=0.2),
    ]
    flat = inputs["logits"].copy()
    flat[0] /= 6
    for step in range(5):
        alone = run(
            inputs["logits"][2:3],
            [seeded],
            [42],
            [step],
            bias=inputs["bias"][2:3],
            prompt_mask=inputs["prompt_mask"][2:3],
            counts=inputs["counts"][2:3],
        )
        mixed = run(
            flat,
            [others[0], others[1], seeded, others[2]],
            [5, 6, 42, 9],
            [3, 1, step, 8],
            bias=inputs["bias"],
            prompt_mask=inputs["prompt_mask"],
            counts=inputs["counts"],
        )
        assert int(mixed.tokens[2]) == int(alone.tokens[0])


def test_different_steps_draw_differently() -> None:
    result = run(
        np.zeros((DRAWS, 12), np.float32), [SamplingParams()] * DRAWS, [3] * DRAWS, list(range(DRAWS))
    )
    assert_follows(np.asarray(result.tokens), np.full(12, 1 / 12))


def test_logprobs_come_from_the_raw_logits() -> None:
    inputs = mixed_inputs(2)
    params = [
        SamplingParams(temperature=0.0, logprobs=5),
        SamplingParams(temperature=1.5, top_k=3, repetition_penalty=2.0, logprobs=0),
        None,
        SamplingParams(temperature=0.7, min_p=0.5),
    ]
    result = run_mixed(inputs, params)
    raw = reference.log_softmax(inputs["logits"])
    tokens = np.asarray(result.tokens)
    np.testing.assert_allclose(np.asarray(result.logprob), raw[np.arange(4), tokens], atol=1e-5)
    for b in range(4):
        order = np.argsort(-raw[b], kind="stable")
        assert int(result.rank[b]) == 1 + int(np.nonzero(order == tokens[b])[0][0])
        np.testing.assert_array_equal(np.asarray(result.top_ids)[b], order[:20])
    assert int(result.rank[0]) > 1  # the bitmask banned the raw argmax, so the greedy token ranks lower


def test_no_row_asking_for_logprobs_skips_them() -> None:
    inputs = mixed_inputs(3)
    result = run(inputs["logits"], [SamplingParams(temperature=0.0)] * 4)
    np.testing.assert_array_equal(np.asarray(result.tokens), np.argmax(inputs["logits"], axis=-1))
    assert np.all(np.asarray(result.top_ids) == -1)


def test_plus_100_bias_forces_a_token_for_greedy_and_random_rows() -> None:
    inputs = mixed_inputs(4)
    bias = np.zeros((4, 1000), np.float32)
    bias[:, 123] = 100.0
    params = [
        SamplingParams(temperature=0.0),
        SamplingParams(temperature=2.0),
        SamplingParams(top_p=0.5),
        None,
    ]
    result = run(inputs["logits"], params, bias=bias)
    assert np.asarray(result.tokens).tolist() == [123] * 4
