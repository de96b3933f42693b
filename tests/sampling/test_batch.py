"""SamplingBatch.from_params: per-row host arrays, padding rows neutral."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from jaxserve.sampling.batch import SamplingBatch
from jaxserve.sampling.params import SamplingParams


def test_rows_carry_each_requests_parameters() -> None:
    params = [
        SamplingParams(
            temperature=0.7,
            top_p=0.9,
            top_k=40,
            min_p=0.05,
            presence_penalty=0.5,
            frequency_penalty=-0.5,
            repetition_penalty=1.2,
            logprobs=3,
        ),
        SamplingParams(
            temperature=0.0, top_k=7, min_p=0.5, repetition_penalty=1.5, logprobs=0, logit_bias={3: 2.0}
        ),
        None,
    ]
    batch = SamplingBatch.from_params(params, [5, -1, 0], [10, 0, 0], [False, True, False])
    host = {name: np.asarray(value) for name, value in vars(batch).items()}
    np.testing.assert_allclose(host["temperature"], [0.7, 0.0, 0.0], rtol=1e-6)
    np.testing.assert_allclose(host["top_p"], [0.9, 1.0, 1.0], rtol=1e-6)
    np.testing.assert_array_equal(host["top_k"], [40, 0, 0])  # greedy rows drop their filters
    np.testing.assert_allclose(host["min_p"], [0.05, 0.0, 0.0], rtol=1e-6)
    np.testing.assert_allclose(host["presence_penalty"], [0.5, 0.0, 0.0])
    np.testing.assert_allclose(host["frequency_penalty"], [-0.5, 0.0, 0.0])
    np.testing.assert_allclose(host["repetition_penalty"], [1.2, 1.5, 1.0], rtol=1e-6)  # greedy keeps these
    np.testing.assert_array_equal(host["seed"], [5, 2**32 - 1, 0])
    np.testing.assert_array_equal(host["step"], [10, 0, 0])
    np.testing.assert_array_equal(host["num_logprobs"], [3, 0, -1])
    np.testing.assert_array_equal(host["biased"], [False, True, False])  # the slot's bias row is read
    np.testing.assert_array_equal(host["restricted"], [False, True, False])  # the bitmask is applied
    assert host["seed"].dtype == np.uint32 and host["top_k"].dtype == np.int32
    assert all(value.shape == (3,) for value in host.values())


def test_is_a_pytree_of_host_arrays() -> None:
    """Built on the host: the runner places the whole step on the device mesh, with its sharding, at once."""
    batch = SamplingBatch.from_params([SamplingParams()], [1], [2])
    leaves = jax.tree_util.tree_leaves(batch)
    assert len(leaves) == 12
    assert all(isinstance(leaf, np.ndarray) for leaf in leaves)


def test_huge_top_k_fits_int32() -> None:
    batch = SamplingBatch.from_params([SamplingParams(top_k=10**12)], [0], [0])
    assert int(batch.top_k[0]) == 2**31 - 1


def test_lengths_must_agree() -> None:
    with pytest.raises(ValueError):
        SamplingBatch.from_params([None, None], [0], [0, 0])
