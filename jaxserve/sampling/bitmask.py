"""The token bitmask: which tokens a row may sample, packed 32 to an int32 word.

One format carries every hard restriction (allowed_token_ids, bad words, min_tokens bans, and later
grammar masks from llguidance, which uses the same packing): bit i of word j allows token 32*j + i, a
row is [W] int32 with W = ceil(V / 32), a batch [B, W]. Rows are built and edited on the host in NumPy,
where a [W] row costs 32x less to copy than a [V] one; the device only unpacks and applies them.
"""

from __future__ import annotations

from collections.abc import Iterable

import jax
import jax.numpy as jnp
import numpy as np

BITS = 32


def bitmask_width(vocab: int) -> int:
    """Words per row: ceil(vocab / 32)."""
    return -(-vocab // BITS)


def _pack(allowed: np.ndarray) -> np.ndarray:
    """[vocab] bool -> [W] int32 words; bits past the vocabulary stay cleared."""
    padded = np.zeros(bitmask_width(allowed.shape[-1]) * BITS, np.uint32)
    padded[: allowed.shape[-1]] = allowed
    words = (padded.reshape(-1, BITS) << np.arange(BITS, dtype=np.uint32)).sum(axis=-1, dtype=np.uint32)
    return words.view(np.int32)


def _token_array(vocab: int, token_ids: Iterable[int]) -> np.ndarray:
    ids = np.fromiter(token_ids, dtype=np.int64)
    if ids.size and (ids.min() < 0 or ids.max() >= vocab):
        raise ValueError(f"token ids outside [0, {vocab}) in a bitmask")
    return ids


def full_bitmask(vocab: int) -> np.ndarray:
    """[W] int32: every token allowed, padding bits beyond the vocabulary cleared."""
    return _pack(np.ones(vocab, np.bool_))


def allowed_bitmask(vocab: int, token_ids: Iterable[int]) -> np.ndarray:
    """[W] int32: only `token_ids` allowed."""
    allowed = np.zeros(vocab, np.bool_)
    allowed[_token_array(vocab, token_ids)] = True
    return _pack(allowed)


def ban(row: np.ndarray, token_ids: Iterable[int]) -> np.ndarray:
    """A copy of the [W] int32 `row` with the bits of `token_ids` cleared (the row itself is shared)."""
    words = np.array(row, dtype=np.int32, copy=True).view(np.uint32)
    if words.ndim != 1:
        raise ValueError(f"ban edits one [W] row, got shape {words.shape}")
    ids = _token_array(words.shape[-1] * BITS, token_ids)
    # ufunc.at applies repeated word indices one after another instead of keeping only the last.
    np.bitwise_and.at(words, ids // BITS, ~(np.uint32(1) << (ids % BITS).astype(np.uint32)))
    return words.view(np.int32)


def apply_bitmask(logits: jax.Array, bitmask: jax.Array) -> jax.Array:
    """Disallowed tokens' logits become -inf. logits: [B, V] float32; bitmask: [B, W] int32.

    Purely elementwise over the logits viewed as [B, W, 32] (no [B, V] bit array is built), so XLA
    fuses it with whatever reads the result; that is cheaper than testing for all-allowed rows first,
    which would force the logits to be materialised.
    """
    vocab = logits.shape[-1]
    batch, width = bitmask.shape
    if width != bitmask_width(vocab):
        raise ValueError(f"bitmask width {width} does not fit vocabulary {vocab}")
    words = jnp.pad(logits, ((0, 0), (0, width * BITS - vocab))).reshape(batch, width, BITS)
    bit = jnp.left_shift(jnp.int32(1), jnp.arange(BITS, dtype=jnp.int32))  # [32]; 1 << 31 is the sign bit
    allowed = (bitmask[:, :, None] & bit) != 0  # [B, W, 32]
    return jnp.where(allowed, words, -jnp.inf).reshape(batch, width * BITS)[:, :vocab]
