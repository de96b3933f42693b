"""Attention over a paged KV cache: the dispatcher and the reference pure-JAX implementation.

`paged_attention` is the one seam the model calls. It runs either `reference_paged_attention` (here), the
Pallas ragged paged-attention kernel (jaxserve.modeling.pallas_attention) or, on CPU, the native kernel
(jaxserve.modeling.native_attention): same arguments, same result.
The reference gathers each row's pages into a contiguous [B, S, K, H] view and runs dense masked attention
over it; it is also the kernels' test oracle. `chunked_decode_attention` is the same computation for decode
steps (one query token per row) without the whole gather, for XLA:CPU when the native kernel cannot run.

Dimension letters: B rows, T query tokens per row, S = P * page_size key positions, K key/value heads,
G query heads per KV head, H head width.
"""

from __future__ import annotations

from typing import Literal, get_args

import jax
import jax.numpy as jnp

from jaxserve.modeling import native_attention, pallas_attention
from jaxserve.modeling.kv_cache import gather_pages

AttentionImpl = Literal["auto", "reference", "chunked", "native", "pallas", "pallas_interpret"]
"""Which attention implementation runs: "auto" picks the Pallas kernel on TPU when it takes the shapes; on
CPU the native kernel when it is built and takes the shapes (see `uses_native`), else the chunked path for
one-token steps (see `uses_chunked_decode`); the reference otherwise. "native" forces the native kernel;
"chunked" the chunked path for one-token steps (longer ones run the reference);
"pallas_interpret" runs the kernel through the Pallas interpreter (any backend; tests)."""

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
    if impl == "native" and (reason := native_attention.unsupported_reason(q, layer_cache)) is not None:
        raise ValueError(f"the native attention kernel cannot run: {reason}")
    if impl == "native" or (impl == "auto" and uses_native(q, layer_cache)):
        return native_attention.paged_attention(*args, scale=scale, logit_softcap=logit_softcap)
    if impl == "chunked" or (impl == "auto" and uses_chunked_decode(q)):
        chunked = chunked_decode_attention if q.shape[1] == 1 else reference_paged_attention
        return chunked(*args, scale=scale, logit_softcap=logit_softcap)
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


def uses_chunked_decode(q: jax.Array) -> bool:
    """Whether "auto" runs `chunked_decode_attention` for queries q [B, T, K, G, H]: one token per row, on
    XLA:CPU (TPU has the Pallas kernel; GPU keeps the reference until measured there)."""
    return q.shape[1] == 1 and jax.default_backend() == "cpu"


def uses_native(q: jax.Array, layer_cache: tuple[jax.Array, jax.Array]) -> bool:
    """Whether "auto" runs the native kernel: on CPU, when it takes the shapes and is built."""
    return native_attention.unsupported_reason(q, layer_cache) is None


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


DECODE_CHUNK_POSITIONS = 32
"""Key positions per iteration of `chunked_decode_attention` (whole pages; one page if pages are longer).
Measured over 30 SmolLM2-shaped attention layers at batch 64 (random page tables, contexts 140-204, YNNPACK
dots, 2-core CPU, 2026-11-26): 16 positions 222 ms, 32 154 ms, 64 203 ms."""


def chunked_decode_attention(
    q: jax.Array,
    layer_cache: tuple[jax.Array, jax.Array],
    block_tables: jax.Array,
    positions: jax.Array,
    sliding_window: int | None,
    *,
    scale: float | None = None,
    logit_softcap: float | None = None,
) -> jax.Array:
    """`reference_paged_attention` for one query token per row (q [B, 1, K, G, H]), reading each row's pages
    DECODE_CHUNK_POSITIONS at a time with an online softmax (flash-decoding), instead of gathering them all.

    Why: on XLA:CPU the reference gathers every row's whole block-table bucket into a fresh [B, S, K, H]
    buffer (a transposed copy, for the per-head matmuls) and then reads it again; at batch 64 that took
    most of a decode step. A chunk's gathered keys and values are small enough to stay in cache between
    the gather and the two matmuls. The loop also stops after the chunk holding the batch's furthest
    position (and starts, with a sliding window, at the first chunk any row still sees), so the cost
    follows the real context lengths rather than the bucket width.

    Rows at positions past the block table's span are padding (the runner puts them at PAD_POSITION):
    they do not extend the loop, and their output is finite but meaningless.
    """
    batch, _, kv_heads, groups, head_dim = q.shape
    page_size = layer_cache[0].shape[1]
    pages_per_chunk = max(1, DECODE_CHUNK_POSITIONS // page_size)
    chunk_len = pages_per_chunk * page_size
    num_pages = block_tables.shape[1]
    num_chunks = -(-num_pages // pages_per_chunk)
    # Pad the tables to whole chunks with page 0: its positions lie past every real row's position, so the
    # causal mask hides them.
    tables = jnp.pad(block_tables, ((0, 0), (0, num_chunks * pages_per_chunk - num_pages)))
    query = q[:, 0]  # [B, K, G, H]
    pos = positions[:, 0]
    span = num_pages * page_size
    real = pos < span
    stop = jnp.max(jnp.where(real, pos, 0)) // chunk_len + 1
    start = jnp.zeros((), stop.dtype)
    if sliding_window is not None:
        first_visible = jnp.min(jnp.where(real, pos, span)) - sliding_window + 1
        # At least one chunk runs (even for a batch of padding rows), so the softmax sums are never 0.
        start = jnp.minimum(jnp.maximum(first_visible, 0) // chunk_len, stop - 1)

    def attend_chunk(
        i: jax.Array, carry: tuple[jax.Array, jax.Array, jax.Array]
    ) -> tuple[jax.Array, jax.Array, jax.Array]:
        running_max, denom, acc = carry
        pages = jax.lax.dynamic_slice_in_dim(tables, i * pages_per_chunk, pages_per_chunk, axis=1)
        keys, values = gather_pages(layer_cache, pages)  # [B, chunk_len, K, H]
        scores = jnp.einsum("bkgh,bskh->bkgs", query, keys, preferred_element_type=jnp.float32)
        scores = scaled_scores(scores, head_dim, scale, logit_softcap)
        visible = visible_keys(chunk_len, positions - i * chunk_len, sliding_window)[:, 0]  # [B, chunk_len]
        scores = jnp.where(visible[:, None, None, :], scores, MASK_VALUE)
        # Online softmax: rescale what earlier chunks summed to the new running maximum.
        new_max = jnp.maximum(running_max, jnp.max(scores, axis=-1))
        rescale = jnp.exp(running_max - new_max)
        probs = jnp.exp(scores - new_max[..., None])
        denom = denom * rescale + jnp.sum(probs, axis=-1)
        acc = acc * rescale[..., None] + jnp.einsum(
            "bkgs,bskh->bkgh", probs.astype(values.dtype), values, preferred_element_type=jnp.float32
        )
        return new_max, denom, acc

    init = (
        jnp.full((batch, kv_heads, groups), MASK_VALUE, jnp.float32),
        jnp.zeros((batch, kv_heads, groups), jnp.float32),
        jnp.zeros((batch, kv_heads, groups, head_dim), jnp.float32),
    )
    _, denom, acc = jax.lax.fori_loop(start, stop, attend_chunk, init)
    return (acc / denom[..., None])[:, None].astype(q.dtype)
