"""Attention over a paged KV cache: the dispatcher and the reference pure-JAX implementation.

`paged_attention` is the one seam the model calls. It runs either `reference_paged_attention` (here) or the
Pallas ragged paged-attention kernel (jaxserve.modeling.pallas_attention): same arguments, same result.
The reference gathers each row's pages into a contiguous [B, S, K, H] view and runs dense masked attention
over it, which is what XLA:CPU does well; it is also the kernel's test oracle.

Dimension letters: B rows, T query tokens per row, S = P * page_size key positions, K key/value heads,
G query heads per KV head, H head width.
"""

from __future__ import annotations

from typing import Literal, get_args

import jax
import jax.numpy as jnp

from jaxserve.modeling import pallas_attention
from jaxserve.modeling.kv_cache import gather_pages

AttentionImpl = Literal["auto", "reference", "pallas", "pallas_interpret"]
"""Which attention implementation runs: "auto" picks the Pallas kernel on TPU when it takes the shapes and the
reference otherwise; "pallas_interpret" runs the kernel through the Pallas interpreter (any backend; tests)."""

ATTENTION_IMPLS: tuple[str, ...] = get_args(AttentionImpl)

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
    impl: AttentionImpl = "auto",
) -> jax.Array:
    """Causal paged attention (see `reference_paged_attention` for the semantics) by the implementation
    `impl` names. Chosen at trace time from static shapes and the backend, so it costs nothing per step."""
    args = (q, layer_cache, block_tables, positions, sliding_window)
    if impl == "reference" or (
        impl == "auto" and (jax.default_backend() != "tpu" or not pallas_attention.supports(q, layer_cache))
    ):
        return reference_paged_attention(*args, scale=scale, logit_softcap=logit_softcap)
    if impl == "pallas":
        reason = pallas_attention.unsupported_reason(q, layer_cache)
        if reason is not None:
            raise ValueError(f"the Pallas attention kernel cannot take these shapes: {reason}")
    elif impl not in ("auto", "pallas_interpret"):
        raise ValueError(f"unknown attention implementation {impl!r}; expected one of {ATTENTION_IMPLS}")
    interpret = impl == "pallas_interpret"
    # A pallas_call cannot be split by GSPMD: on a multi-device mesh (the one the runner traces under) the
    # kernel runs per device under shard_map.
    mesh = jax.sharding.get_abstract_mesh()
    if not mesh.empty and mesh.size > 1:
        return pallas_attention.sharded_ragged_paged_attention(
            mesh, *args, scale=scale, logit_softcap=logit_softcap, interpret=interpret
        )
    return pallas_attention.ragged_paged_attention(
        *args, scale=scale, logit_softcap=logit_softcap, interpret=interpret
    )


def reference_paged_attention(
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
