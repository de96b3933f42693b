"""Logprobs come from log_softmax of the raw logits; ranks and top-20 are consistent with them."""

from __future__ import annotations

import jax
import numpy as np

from jaxserve.sampling.logprobs import TOP_LOGPROBS, prompt_token_logprobs, token_logprobs
from tests.sampling import reference

jitted = jax.jit(token_logprobs)


def test_values_ranks_and_top_ids() -> None:
    rng = np.random.default_rng(0)
    logits = (rng.normal(size=(6, 1000)) * 4).astype(np.float32)
    tokens = np.asarray([int(np.argmax(logits[0])), 0, 1, 999, 500, int(np.argmin(logits[5]))], np.int32)
    chosen, rank, top_ids, top_lp = (np.asarray(a) for a in jitted(logits, tokens))
    expected = reference.log_softmax(logits)
    assert top_ids.shape == (6, TOP_LOGPROBS) and top_lp.shape == (6, TOP_LOGPROBS)
    np.testing.assert_allclose(chosen, expected[np.arange(6), tokens], atol=1e-5)
    for b in range(6):
        order = np.argsort(-expected[b], kind="stable")
        assert rank[b] == 1 + int(np.nonzero(order == tokens[b])[0][0])
        np.testing.assert_array_equal(top_ids[b], order[:TOP_LOGPROBS])
        np.testing.assert_allclose(top_lp[b], expected[b][order[:TOP_LOGPROBS]], atol=1e-5)
        assert np.all(np.diff(top_lp[b]) <= 0)
    assert rank[0] == 1 and rank[5] == 1000


def test_tied_tokens_count_ahead_of_the_chosen_one() -> None:
    logits = np.asarray([[1.0, 2.0, 2.0, 0.0] + [-5.0] * 28], np.float32)
    _, rank, top_ids, _ = jitted(logits, np.asarray([1], np.int32))
    assert int(rank[0]) == 2  # vLLM counts logprobs >= the chosen one
    assert np.asarray(top_ids)[0, :4].tolist() == [1, 2, 0, 3]  # ties: lower id first


def test_small_vocabulary_pads_the_top_list() -> None:
    logits = np.asarray([[0.0, 1.0, 2.0]], np.float32)
    _, _, top_ids, top_lp = jitted(logits, np.asarray([0], np.int32))
    assert np.asarray(top_ids)[0].tolist() == [2, 1, 0] + [-1] * (TOP_LOGPROBS - 3)
    assert np.all(np.isneginf(np.asarray(top_lp)[0, 3:]))


def test_prompt_logprobs_score_each_next_prompt_token() -> None:
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(5, 64)).astype(np.float32)
    next_ids = np.asarray([3, 9, 0, 63, 7], np.int32)
    lp, rank, _, _ = (np.asarray(a) for a in jax.jit(prompt_token_logprobs)(logits, next_ids))
    expected = reference.log_softmax(logits)[np.arange(5), next_ids]
    np.testing.assert_allclose(lp, expected, atol=1e-5)
    assert np.all(rank >= 1)
