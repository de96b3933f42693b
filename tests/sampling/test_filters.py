"""min-p, top-k and top-p against NumPy references, including the exact fallbacks past 256 candidates."""

from __future__ import annotations

import jax
import numpy as np

from jaxserve.sampling.filters import TOP_CANDIDATES, apply_min_p, apply_top_k_top_p
from tests.sampling import reference

ROWS, VOCAB = 8, 1000  # one shape for every test here: each function compiles once
jitted_min_p = jax.jit(apply_min_p)
jitted_top_k_top_p = jax.jit(apply_top_k_top_p)


def random_logits(seed: int, scale: float = 3.0) -> np.ndarray:
    return (np.random.default_rng(seed).normal(size=(ROWS, VOCAB)) * scale).astype(np.float32)


def top_k_top_p(logits: np.ndarray, top_k: list[int], top_p: list[float]) -> np.ndarray:
    return np.asarray(jitted_top_k_top_p(logits, np.asarray(top_k, np.int32), np.asarray(top_p, np.float32)))


def expected_top_k_top_p(row: np.ndarray, k: int, p: float) -> np.ndarray:
    after_k = reference.filtered(row, reference.top_k_keep(row, k))
    return reference.filtered(after_k, reference.top_p_keep(after_k, p))


def test_min_p_matches_reference_and_leaves_off_rows_untouched() -> None:
    logits = random_logits(0)
    min_p = np.asarray([0.0, 0.01, 0.1, 0.5, 1.0, 0.0, 0.3, 1e-4], np.float32)
    out = np.asarray(jitted_min_p(logits, min_p))
    for b in range(ROWS):
        if min_p[b] == 0:
            np.testing.assert_array_equal(out[b], logits[b])
        else:
            expected = reference.filtered(logits[b], reference.min_p_keep(logits[b], float(min_p[b])))
            np.testing.assert_array_equal(out[b], expected)
    assert np.isfinite(out[4]).sum() == 1  # min_p = 1 keeps only the most likely token


def test_min_p_off_everywhere_is_identity() -> None:
    logits = random_logits(1)
    np.testing.assert_array_equal(np.asarray(jitted_min_p(logits, np.zeros(ROWS, np.float32))), logits)


def test_top_k_matches_reference_including_k_past_the_candidates() -> None:
    logits = random_logits(2)
    top_k = [0, 1, 5, 50, TOP_CANDIDATES, TOP_CANDIDATES + 1, 700, VOCAB]
    out = top_k_top_p(logits, top_k, [1.0] * ROWS)
    for b in range(ROWS):
        np.testing.assert_array_equal(out[b], expected_top_k_top_p(logits[b], top_k[b], 1.0))
    np.testing.assert_array_equal(out[0], logits[0])  # off
    np.testing.assert_array_equal(out[7], logits[7])  # k >= vocab is off
    assert [int(np.isfinite(out[b]).sum()) for b in range(1, 7)] == top_k[1:7]


def test_top_p_matches_reference_including_nuclei_past_the_candidates() -> None:
    logits = random_logits(3, scale=1.0)  # flat: a 0.5 nucleus spans hundreds of tokens
    top_p = [1.0, 1e-6, 0.05, 0.3, 0.5, 0.9, 0.99, 1.0]
    out = top_k_top_p(logits, [0] * ROWS, top_p)
    for b in range(ROWS):
        np.testing.assert_array_equal(out[b], expected_top_k_top_p(logits[b], 0, top_p[b]))
    assert np.isfinite(out[1]).sum() == 1  # a tiny top_p still keeps the most likely token
    assert np.isfinite(out[5]).sum() > TOP_CANDIDATES  # this row took the bisection
    np.testing.assert_array_equal(out[0], logits[0])


def test_top_k_then_top_p_over_the_renormalised_survivors() -> None:
    logits = random_logits(4, scale=1.0)
    top_k = [10, 50, 200, 300, 600, 0, 40, 1]
    top_p = [0.5, 0.5, 0.9, 0.9, 0.8, 0.7, 1.0, 0.3]
    out = top_k_top_p(logits, top_k, top_p)
    for b in range(ROWS):
        np.testing.assert_array_equal(out[b], expected_top_k_top_p(logits[b], top_k[b], top_p[b]))
    # Renormalisation matters: with top-k 10, top-p 0.5 keeps about half of those ten, not all of them.
    assert 1 < np.isfinite(out[0]).sum() < 10


def test_ties_at_a_threshold_are_kept() -> None:
    logits = np.tile(np.linspace(-5, 0, VOCAB, dtype=np.float32), (ROWS, 1))
    logits[:, :300] = 1.0  # 300 tokens tie for the top, more than the candidates hold
    top_k = [10, 10, 10, 0, 0, 299, 301, 1]
    top_p = [1.0, 0.5, 0.95, 0.5, 0.999, 1.0, 1.0, 1.0]
    out = top_k_top_p(logits, top_k, top_p)
    for b in range(ROWS):
        np.testing.assert_array_equal(out[b], expected_top_k_top_p(logits[b], top_k[b], top_p[b]))
    assert np.isfinite(out[0]).sum() == 300  # top_k 10 keeps all 300 tied tokens (vLLM's rule)
    assert np.isfinite(out[3]).sum() == 300  # the tie group straddles the 0.5 mass point
    assert np.isfinite(out[6]).sum() == 301


def test_all_filters_off_is_identity() -> None:
    logits = random_logits(5)
    out = top_k_top_p(logits, [0] * ROWS, [1.0] * ROWS)
    np.testing.assert_array_equal(out, logits)


def test_removed_tokens_stay_removed() -> None:
    logits = random_logits(6)
    logits[:, ::3] = -np.inf  # e.g. a bitmask already applied
    out = top_k_top_p(logits, [5, 0, 400, 0, 20, 0, 0, 0], [1.0, 0.9, 0.9, 0.2, 0.6, 1.0, 0.999, 1e-3])
    assert np.all(np.isneginf(out[:, ::3]))
    for b in range(ROWS):
        assert np.isfinite(out[b]).sum() >= 1
