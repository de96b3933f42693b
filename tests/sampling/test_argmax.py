"""The grouped row argmax gives exactly jnp.argmax's index, ties, NaN and -inf rows included."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxserve.sampling.argmax import GROUP, first_argmax


@pytest.mark.parametrize("vocab", [GROUP * 3, GROUP * 3 + 17, 5])
def test_first_argmax_is_jnp_argmax(vocab: int) -> None:
    rng = np.random.default_rng(vocab)
    x = rng.standard_normal((8, vocab)).astype(np.float32)
    x[1, :] = 2.0  # all tied: the first index
    x[2, [3, vocab - 1]] = 50.0  # a tie across groups: the earlier one
    x[3, :] = -np.inf  # nothing allowed: 0, as jnp.argmax gives
    x[5, -1] = 40.0  # the last entry (in the padded group when vocab is not a multiple of GROUP)
    got = np.asarray(jax.jit(first_argmax)(x))
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, np.asarray(jnp.argmax(x, axis=-1)))
    assert got[2] == 3 and got[3] == 0 and got[5] == vocab - 1


def test_a_nan_row_still_gives_an_index_in_range() -> None:
    x = np.zeros((2, GROUP * 2 + 3), np.float32)
    x[0, 300] = np.nan
    x[1, :] = np.nan
    got = np.asarray(jax.jit(first_argmax)(x))
    assert ((got >= 0) & (got < x.shape[1])).all()
