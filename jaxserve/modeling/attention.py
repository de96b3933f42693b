"""Attention over a paged KV cache: the dispatcher and the reference pure-JAX implementation.

`paged_attention` is the one seam the model calls. It runs either `reference_paged_attention` (here) or the
Pallas ragged paged-attention kernel (jaxserve.modeling.pallas_attention): same arguments, same result.
The reference gathers each row's pages into a contiguous [B, S, K, H] view and runs dense masked attention
over it; it is also the kernel's test oracle. `folded_decode_attention` is the same computation for decode
steps (one query token per row) laid out for XLA:CPU: "auto" picks it there.

Dimension letters: B rows, T query tokens per row, S = P * page_size key positions, K key/value heads,
G query heads per KV head, H head width.
"""

from __future__ import annotations

from typing import Literal, get_args

import jax
import jax.numpy as jnp

from jaxserve.modeling import pallas_attention
from jaxserve.modeling.kv_cache import gather_pages

AttentionImpl = Literal["auto", "reference", "folded", "pallas", "pallas_interpret"]
"""Which attention implementation runs: "auto" picks the Pallas kernel on TPU when it takes the shapes, the
folded decode path for one-token steps on one CPU device (see `uses_folded_decode`) and the reference
otherwise; "folded" forces the folded path for one-token steps (longer ones run the reference);
"pallas_interpret" runs the kernel through the Pallas interpreter (any backend; tests)."""

ATTENTION_IMPLS: tuple[str, ...] = get_args(AttentionImpl)

FOLDED_MAX_KV_HEADS = 4
"""The folded decode path multiplies by zeros in all but 1 of every K blocks of its matmuls: measured a gain
at K = 3 (SmolLM2), so it is taken up to 4 KV heads and the reference beyond."""

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
    if impl == "folded" or (impl == "auto" and uses_folded_decode(q)):
        folded = folded_decode_attention if q.shape[1] == 1 else reference_paged_attention
        return folded(*args, scale=scale, logit_softcap=logit_softcap)
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


def uses_folded_decode(q: jax.Array) -> bool:
    """Whether "auto" runs `folded_decode_attention` for queries q [B, T, K, G, H]: one token per row, on
    XLA:CPU, not split over a mesh (its zero blocks would turn into cross-device sums), at most
    FOLDED_MAX_KV_HEADS KV heads."""
    mesh = jax.sharding.get_abstract_mesh()
    return (
        q.shape[1] == 1
        and q.shape[2] <= FOLDED_MAX_KV_HEADS
        and jax.default_backend() == "cpu"
        and (mesh.empty or mesh.size == 1)
    )


def scaled_scores(
    scores: jax.Array, head_dim: int, scale: float | None, logit_softcap: float | None
) -> jax.Array:
    """q.k scores times `scale` (default 1/sqrt(H)), then soft-capped when `logit_softcap` is set."""
    scores = scores * (head_dim**-0.5 if scale is None else scale)
    if logit_softcap is not None:
        scores = jnp.tanh(scores / logit_softcap) * logit_softcap
    return scores


def visible_keys(num_keys: int, positions: jax.Array, sliding_window: int | None) -> jax.Array:
    """[B, T, S]: whether key position s is visible to the query at positions[b, t] (causal, windowed)."""
    key_pos = jnp.arange(num_keys, dtype=jnp.int32)
    visible = key_pos[None, None, :] <= positions[:, :, None]
    if sliding_window is not None:
        visible &= key_pos[None, None, :] > positions[:, :, None] - sliding_window
    return visible


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
    scores = scaled_scores(scores, head_dim, scale, logit_softcap)
    visible = visible_keys(keys.shape[1], positions, sliding_window)  # [B, T, S]
    scores = jnp.where(visible[:, None, None, :, :], scores, MASK_VALUE)
    probs = jax.nn.softmax(scores, axis=-1).astype(values.dtype)
    return jnp.einsum("bkgts,bskh->btkgh", probs, values)


def folded_decode_attention(
    q: jax.Array,
    layer_cache: tuple[jax.Array, jax.Array],
    block_tables: jax.Array,
    positions: jax.Array,
    sliding_window: int | None,
    *,
    scale: float | None = None,
    logit_softcap: float | None = None,
) -> jax.Array:
    """`reference_paged_attention` for one query token per row (q [B, 1, K, G, H]), as two batched matmuls
    that read the gathered pages in the order they are stored.

    The reference's per-head matmuls want keys as [B, K, S, H]; XLA:CPU makes that transposed copy inside
    the page gather, and at batch 64 it took more time than the layer's weight matmuls. Here the pages stay
    [B, S, K*H] and the heads fold into the matmul widths: queries spread block-diagonally into [K*H, K*G]
    (zero where the key head is not the query's), so one matmul gives every head's scores [B, S, K*G];
    probabilities times values give [B, K*G, K*H], whose diagonal blocks are the outputs. The matmuls do K
    times the useful work, on data that is small next to the pages read.
    """
    keys, values = gather_pages(layer_cache, block_tables)  # [B, S, K, H]
    batch, num_keys, kv_heads, head_dim = keys.shape
    groups = q.shape[3]
    same_head = jnp.eye(kv_heads, dtype=bool)
    per_head = jnp.transpose(q[:, 0], (0, 1, 3, 2))  # [B, K, H, G]
    spread = jnp.where(same_head[None, :, None, :, None], per_head[:, :, :, None, :], 0.0)  # [B, K', H, K, G]
    spread = spread.reshape(batch, kv_heads * head_dim, kv_heads * groups)
    flat_keys = keys.reshape(batch, num_keys, kv_heads * head_dim)
    scores = jnp.einsum("bsc,bcq->bsq", flat_keys, spread, preferred_element_type=jnp.float32)  # [B, S, K*G]
    scores = scaled_scores(scores, head_dim, scale, logit_softcap)
    visible = visible_keys(num_keys, positions, sliding_window)[:, 0]  # [B, S]
    scores = jnp.where(visible[:, :, None], scores, MASK_VALUE)
    probs = jax.nn.softmax(scores, axis=1).astype(values.dtype)
    flat_values = values.reshape(batch, num_keys, kv_heads * head_dim)
    blocks = jnp.einsum("bsq,bsc->bqc", probs, flat_values).reshape(
        batch, kv_heads, groups, kv_heads, head_dim
    )
    out = jnp.sum(jnp.where(same_head[None, :, None, :, None], blocks, 0.0), axis=3)  # [B, K, G, H]
    return out[:, None].astype(q.dtype)
