"""The random draw: one token per row from softmax(logits), keyed by the row's seed and step.

Inverse-CDF sampling with one uniform per row. The Gumbel-max trick (jax.random.categorical) needs a
random number per vocabulary entry, and threefry on two CPU cores makes that ~190 ms per step at
B=64, V=49152; one uniform plus two cumulative sums cost ~7 ms. The prefix sum is two-level (per block
of BLOCK tokens, then inside the chosen block) so no [B, V] scan is needed.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxserve.sampling.argmax import first_argmax

BLOCK = 128


def row_keys(seed: jax.Array, step: jax.Array) -> jax.Array:
    """[B] PRNG keys fold_in(key(seed), step): a row's draw depends on nothing else in the batch.
    seed: [B] uint32; step: [B] int32."""
    return jax.vmap(lambda s, n: jax.random.fold_in(jax.random.key(s), n))(seed, step)


def categorical(logits: jax.Array, keys: jax.Array) -> jax.Array:
    """Draw token ids [B] int32 with probability softmax(logits) per row. logits: [B, V] float32
    (-inf = removed, never drawn); keys: [B] PRNG keys. A row with every token removed returns its
    argmax (token 0)."""
    batch, vocab = logits.shape
    blocks = -(-vocab // BLOCK)
    u = jax.vmap(lambda k: jax.random.uniform(k, (), jnp.float32))(keys)  # [B] in [0, 1)
    peak = jnp.max(logits, axis=-1, keepdims=True)
    peak = jnp.where(jnp.isfinite(peak), peak, 0.0)
    weight = jnp.exp(logits - peak)  # [B, V]: unnormalised probabilities, 0 for removed tokens
    weight = jnp.pad(weight, ((0, 0), (0, blocks * BLOCK - vocab))).reshape(batch, blocks, BLOCK)
    block_mass = jnp.sum(weight, axis=-1)  # [B, NB]
    cumulative = jnp.cumsum(block_mass, axis=-1)  # [B, NB], non-decreasing
    total = cumulative[:, -1]
    target = u * total  # [B], < total since u < 1

    # The block whose cumulative mass first exceeds target: the first with cumulative > target. Rounding
    # cannot make that a block of zero mass; the fallback (last block with mass) is for target >= total.
    block = jnp.sum(cumulative <= target[:, None], axis=-1)
    last_with_mass = blocks - 1 - jnp.argmax((block_mass > 0)[:, ::-1], axis=-1)
    block = jnp.where(block < blocks, block, last_with_mass)  # [B]
    before = jnp.where(block > 0, jnp.take_along_axis(cumulative, (block - 1)[:, None], axis=-1)[:, 0], 0.0)
    inner = jnp.take_along_axis(weight, block[:, None, None], axis=1)[:, 0]  # [B, BLOCK]
    # Same rule inside the block; target - before >= 0 exactly, so a leading zero-weight token is skipped.
    inner_cumulative = jnp.cumsum(inner, axis=-1)
    offset = jnp.sum(inner_cumulative <= (target - before)[:, None], axis=-1)
    last_positive = BLOCK - 1 - jnp.argmax((inner > 0)[:, ::-1], axis=-1)
    offset = jnp.where(offset < BLOCK, offset, last_positive)  # the block's own sum rounded differently
    token = (block * BLOCK + offset).astype(jnp.int32)
    # The fallback's argmax runs on every draw (a select, not a branch): first_argmax, not jnp.argmax, whose
    # [B, V] reduction XLA:CPU does not vectorise (~7 ms at B=64 against ~0.6; see sampling.argmax).
    return jnp.where(total > 0, token, first_argmax(logits))
