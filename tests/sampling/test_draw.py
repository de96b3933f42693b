"""The inverse-CDF draw: frequencies follow softmax, removed tokens never appear, keys are per row."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxserve.sampling.draw import BLOCK, categorical, row_keys
from tests.sampling import reference

ROWS = 4000


@jax.jit
def draw(logits: jax.Array, seed: jax.Array, step: jax.Array) -> jax.Array:
    return categorical(logits, row_keys(seed, step))


def chi_square(tokens: np.ndarray, probs: np.ndarray) -> tuple[float, int]:
    """Statistic and degrees of freedom over the tokens with probability > 0."""
    support = probs > 0
    observed = np.bincount(tokens, minlength=probs.size)[support]
    expected = probs[support] * tokens.size
    return float(np.sum((observed - expected) ** 2 / expected)), int(support.sum()) - 1


def test_frequencies_across_blocks_match_softmax() -> None:
    """Vocab 300 spans three blocks (the last one padded); mass sits in all of them."""
    vocab = 300
    assert vocab > 2 * BLOCK
    logits = np.full(vocab, -np.inf, np.float32)
    chosen = np.asarray([0, 5, 127, 128, 200, 255, 256, 299])
    logits[chosen] = np.log(np.asarray([1, 2, 3, 4, 4, 3, 2, 1], np.float32))
    tokens = np.asarray(
        draw(np.tile(logits, (ROWS, 1)), np.arange(ROWS, dtype=np.uint32), np.zeros(ROWS, np.int32))
    )
    assert set(tokens.tolist()) <= set(chosen.tolist())  # removed tokens never appear
    statistic, dof = chi_square(tokens, reference.softmax(logits))
    assert dof == 7 and statistic < 24.32  # p = 0.001


def test_a_row_with_every_token_removed_returns_its_argmax() -> None:
    logits = np.full((2, 40), -np.inf, np.float32)
    logits[1, 17] = 0.0
    tokens = np.asarray(draw(logits, np.asarray([1, 2], np.uint32), np.asarray([0, 0], np.int32)))
    assert tokens.tolist() == [0, 17]


def test_a_rows_key_depends_on_its_seed_and_step_only() -> None:
    keys = row_keys(jnp.asarray([7, 7, 8], jnp.uint32), jnp.asarray([3, 4, 3], jnp.int32))
    alone = row_keys(jnp.asarray([7], jnp.uint32), jnp.asarray([3], jnp.int32))
    data = jax.random.key_data(keys)
    np.testing.assert_array_equal(np.asarray(data[0]), np.asarray(jax.random.key_data(alone)[0]))
    assert not np.array_equal(np.asarray(data[0]), np.asarray(data[1]))
    assert not np.array_equal(np.asarray(data[0]), np.asarray(data[2]))
