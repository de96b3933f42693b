"""Attention over a paged KV cache: the reference pure-JAX implementation.

`paged_attention` is the one seam a device kernel (a Pallas ragged paged-attention kernel on TPU/GPU)
replaces: same arguments, same result. This version gathers each row's pages into a contiguous
[B, S, K, H] view and runs dense masked attention over it, which is what XLA:CPU does well.

Dimension letters: B rows, T query tokens per row, S = P * page_size key positions, K key/value heads,
G query heads per KV head, H head width.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxserve.modeling.kv_cache import gather_pages

# Masked scores use a large finite negative rather than -inf: a fully masked row (a padding query) then
# yields a uniform softmax instead of NaNs that could leak through later arithmetic.
MASK_VALUE = -1e30


def paged_attention(
    q: jax.Array,
    layer_cache: tuple[jax.Array, jax.Array],
    block_tables: jax.Array,
    positions: jax.Array,
    sliding_window: int | None,
    *,
    scale: float | None = None,
    logit_softcap: float | None = None,
) -> jax.Array:
    """Causal attention of queries q [B, T, K, G, H] at `positions` [B, T] over each row's cached keys.

    Row b's keys are the pages `block_tables[b]` ([B, P]); key position s is visible to a query at
    position p when s <= p (and s > p - sliding_window with a window: the window counts the query's own
    position, so it sees `sliding_window` keys at most). Scores are q.k * scale (default 1/sqrt(H)), then
    soft-capped to (-cap, cap) by cap * tanh(score / cap) when `logit_softcap` is set (Gemma 2).
    The new tokens' keys must already be in the cache. Returns [B, T, K, G, H].
    """
    keys, values = gather_pages(layer_cache, block_tables)  # [B, S, K, H]
    head_dim = q.shape[-1]
    scores = jnp.einsum("btkgh,bskh->bkgts", q, keys, preferred_element_type=jnp.float32)
    scores = scores * (head_dim**-0.5 if scale is None else scale)
    if logit_softcap is not None:
        scores = jnp.tanh(scores / logit_softcap) * logit_softcap
    key_pos = jnp.arange(keys.shape[1], dtype=jnp.int32)
    visible = key_pos[None, None, :] <= positions[:, :, None]  # [B, T, S]
    if sliding_window is not None:
        visible &= key_pos[None, None, :] > positions[:, :, None] - sliding_window
    scores = jnp.where(visible[:, None, None, :, :], scores, MASK_VALUE)
    probs = jax.nn.softmax(scores, axis=-1).astype(values.dtype)
    return jnp.einsum("bkgts,bskh->btkgh", probs, values)
