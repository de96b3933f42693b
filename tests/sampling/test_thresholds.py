"""Exact bisection thresholds over float32 bit patterns."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxserve.sampling.thresholds import from_key, kth_largest, nucleus_threshold, ordered_keys

jitted_kth = jax.jit(kth_largest)
jitted_nucleus = jax.jit(nucleus_threshold)


def test_keys_preserve_float_order() -> None:
    values = np.asarray(
        [-np.inf, -3e38, -2.0, -1.0, -1e-40, -0.0, 0.0, 1e-40, 1.0, 1.0000001, 2.0, 3e38, np.inf], np.float32
    )
    keys = np.asarray(ordered_keys(jnp.asarray(values)))
    assert np.all(np.diff(keys.astype(np.int64)) > 0)
    np.testing.assert_array_equal(
        np.asarray(from_key(jnp.asarray(keys))).view(np.int32), values.view(np.int32)
    )


def test_kth_largest_counts_ties() -> None:
    row = np.asarray([3.0, -1.0, 3.0, 0.5, -np.inf, 2.0, 2.0, 2.0], np.float32)
    for k, expected in [(1, 3.0), (2, 3.0), (3, 2.0), (5, 2.0), (6, 0.5), (7, -1.0), (8, -np.inf)]:
        assert float(jitted_kth(row, jnp.int32(k))) == expected


def test_kth_largest_matches_sort_on_random_rows() -> None:
    rng = np.random.default_rng(0)
    row = (rng.normal(size=1000) * 4).astype(np.float32)
    ordered = np.sort(row)[::-1]
    for k in [1, 17, 256, 257, 999, 1000]:
        assert float(jitted_kth(row, jnp.int32(k))) == ordered[k - 1]


def test_nucleus_threshold_matches_sorted_cumulative_mass() -> None:
    rng = np.random.default_rng(1)
    row = (rng.normal(size=1000) * 2).astype(np.float32)
    weight = np.exp(row - row.max())
    ordered = np.sort(row)[::-1]
    mass = np.exp(ordered.astype(np.float64) - row.max())
    for p in [0.05, 0.5, 0.9, 0.99]:
        before = np.cumsum(mass) - mass
        expected = ordered[np.nonzero(before < p * mass.sum())[0][-1]]
        target = jnp.float32(p) * jnp.sum(jnp.asarray(weight))
        assert float(jitted_nucleus(row, weight, target)) == expected
