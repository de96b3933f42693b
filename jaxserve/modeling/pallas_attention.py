"""Ragged paged attention as a Pallas TPU kernel: the device replacement for the reference
`jaxserve.modeling.attention.reference_paged_attention`, with the same arguments and result.

"Ragged": one call mixes prefill chunks (many query tokens), decodes (one token) and padding rows. Each
(row, query tile) reads only the pages its real queries can see: from the page holding the oldest key inside
the sliding window (page 0 without a window) to the page holding the newest real query's own key. The page
loop runs for exactly that many pages; pages past it (and freed pages before the window) are never copied.

Dimension letters as in attention.py: B rows, T query tokens per row, K key/value heads, G query heads per KV
head, H head width, P block-table width (pages per row); R = query rows of one tile (tokens x G).

Kernel layout. Queries are regrouped outside the kernel from [B, T, K, G, H] to [B, K, T * G, H] (row r of a
KV head is token r // G, query head r % G), so the G query heads that share a KV head are one [R, H] matrix
and each page costs one [R, H] x [H, page_size] score matmul per KV head. The grid is
(rows, KV-head blocks, query tiles); the pages of a tile are a loop inside the kernel.

Real-TPU constraints (checked by `unsupported_reason`; the dispatcher falls back to the reference otherwise):
head width a multiple of 128 (lane width); page size a multiple of the sublane tile of the cache dtype
(8 for float32, 16 for bfloat16); float32 or bfloat16 queries and cache; a tile's query rows a multiple of
the sublane tile unless the tile is the whole row; working set within the scoped VMEM budget. Interpret
mode (any backend) takes any shape. Only interpret mode has been run so far (no TPU in CI).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu
from jax.sharding import PartitionSpec as P

# Masked scores are a large finite negative (as in the reference) so the running maximum stays finite even
# when a query has seen only masked keys so far; masked probabilities are then zeroed explicitly, so a
# fully masked (padding) query ends with zero weight and a zero output instead of 0/0.
MASK_VALUE = -1e30

# Query rows per tile the default tiling aims at: a full MXU pass on TPU v5e/v6e (256 rows) without the
# float32 accumulator of one KV head ([R, H] f32 = 128 KiB at H = 128) crowding VMEM.
TARGET_TILE_ROWS = 256

# Scoped VMEM a kernel may use by default on current TPUs (v5e: 16 MiB); the estimate below stays under it.
VMEM_BUDGET_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class KernelTiling:
    """How one call is cut into grid steps: query tokens per tile and KV heads per block."""

    query_tile_tokens: int
    kv_heads_per_block: int


def choose_tiling(
    q_shape: tuple[int, ...],
    query_tile_tokens: int | None = None,
    kv_heads_per_block: int | None = None,
) -> KernelTiling:
    """Default tiling for queries [B, T, K, G, H]: the whole row in one tile when it has at most
    TARGET_TILE_ROWS query rows, else tiles of ~TARGET_TILE_ROWS rows (a multiple of 8 tokens); all KV heads
    in one block, because a page's [page_size, K, H] slab is contiguous in HBM and then costs one DMA."""
    _, t, k, g, _ = q_shape
    if query_tile_tokens is None:
        query_tile_tokens = t if t * g <= TARGET_TILE_ROWS else max(8, TARGET_TILE_ROWS // g // 8 * 8)
    return KernelTiling(
        query_tile_tokens=min(query_tile_tokens, t),
        kv_heads_per_block=k if kv_heads_per_block is None else kv_heads_per_block,
    )


def _sublane_tile(dtype: jnp.dtype) -> int:
    """Rows of one (sublane, lane) tile for a dtype: 8 for 32-bit, 16 for 16-bit (two rows per sublane)."""
    return 8 * (4 // jnp.dtype(dtype).itemsize)


def unsupported_reason(
    q: jax.ShapeDtypeStruct | jax.Array,
    layer_cache: tuple[jax.ShapeDtypeStruct | jax.Array, jax.ShapeDtypeStruct | jax.Array],
    tiling: KernelTiling | None = None,
) -> str | None:
    """Why the compiled TPU kernel cannot take these shapes, or None when it can."""
    b, t, k, g, h = q.shape
    cache_k = layer_cache[0]
    _, page_size, cache_heads, cache_width = cache_k.shape
    tiling = tiling or choose_tiling(q.shape)
    supported_dtypes = (jnp.dtype(jnp.float32), jnp.dtype(jnp.bfloat16))
    if (cache_heads, cache_width) != (k, h):
        return f"cache heads/width {(cache_heads, cache_width)} differ from the queries' {(k, h)}"
    if jnp.dtype(q.dtype) not in supported_dtypes or jnp.dtype(cache_k.dtype) not in supported_dtypes:
        return f"dtypes {q.dtype}/{cache_k.dtype}: the kernel takes float32 or bfloat16"
    if h % 128:
        return f"head width {h} is not a multiple of 128 (TPU lane width)"
    if page_size % _sublane_tile(cache_k.dtype):
        return (
            f"page size {page_size} is not a multiple of {_sublane_tile(cache_k.dtype)} for {cache_k.dtype}"
        )
    if k % tiling.kv_heads_per_block:
        return f"{k} KV heads do not split into blocks of {tiling.kv_heads_per_block}"
    if tiling.kv_heads_per_block != k and tiling.kv_heads_per_block % 8:
        return "a KV-head block must be all heads or a multiple of 8 (it is the second-minor block dim)"
    tile_rows = tiling.query_tile_tokens * g
    if tiling.query_tile_tokens < t and tile_rows % _sublane_tile(q.dtype):
        return f"query tile of {tile_rows} rows is not a multiple of {_sublane_tile(q.dtype)}"
    if (
        _vmem_bytes(tile_rows, page_size, tiling.kv_heads_per_block, h, q.dtype, cache_k.dtype)
        > VMEM_BUDGET_BYTES
    ):
        return "query tile and page buffers exceed the VMEM budget"
    return None


def supports(
    q: jax.ShapeDtypeStruct | jax.Array,
    layer_cache: tuple[jax.ShapeDtypeStruct | jax.Array, jax.ShapeDtypeStruct | jax.Array],
) -> bool:
    """Whether the compiled TPU kernel takes these shapes with its default tiling."""
    return unsupported_reason(q, layer_cache) is None


def _vmem_bytes(
    rows: int, page_size: int, heads: int, width: int, q_dtype: jnp.dtype, kv_dtype: jnp.dtype
) -> int:
    """VMEM of one grid step: double-buffered query and output tiles, two slots each of key and value pages,
    the float32 accumulator and the (lane-padded) running max and sum."""
    q_tile = 2 * 2 * heads * rows * width * jnp.dtype(q_dtype).itemsize  # q in, out: each double-buffered
    pages = 2 * 2 * page_size * heads * width * jnp.dtype(kv_dtype).itemsize  # k, v: two slots each
    state = heads * rows * (width + 2 * 128) * 4
    return q_tile + pages + state


def ragged_paged_attention(
    q: jax.Array,
    layer_cache: tuple[jax.Array, jax.Array],
    block_tables: jax.Array,
    positions: jax.Array,
    sliding_window: int | None,
    *,
    scale: float | None = None,
    logit_softcap: float | None = None,
    interpret: bool = False,
    query_tile_tokens: int | None = None,
    kv_heads_per_block: int | None = None,
) -> jax.Array:
    """Causal attention of queries q [B, T, K, G, H] at `positions` [B, T] over each row's cached keys,
    exactly as `reference_paged_attention` (same masks, scale and soft-cap), as a Pallas kernel.

    Queries at positions outside [0, P * page_size) are padding: their output is zero (the reference gives
    an average of whatever it gathered; callers discard both). `interpret` runs the kernel through the
    Pallas interpreter (any backend, slow: tests). `query_tile_tokens` / `kv_heads_per_block` override the
    default tiling (`choose_tiling`). Returns [B, T, K, G, H] in q's dtype.
    """
    b, t, k, g, h = q.shape
    num_pages_per_row = block_tables.shape[1]
    page_size = layer_cache[0].shape[1]
    span = num_pages_per_row * page_size
    tiling = choose_tiling(q.shape, query_tile_tokens, kv_heads_per_block)
    tile_tokens = tiling.query_tile_tokens
    num_tiles = pl.cdiv(t, tile_tokens)
    padded_t = num_tiles * tile_tokens

    # Pad the token axis to whole tiles with padding queries (position `span`: outside every row's pages).
    positions = positions.astype(jnp.int32)
    if padded_t != t:
        q = jnp.pad(q, ((0, 0), (0, padded_t - t), (0, 0), (0, 0), (0, 0)))
        positions = jnp.pad(positions, ((0, 0), (0, padded_t - t)), constant_values=span)
    first_page, page_count = _tile_page_ranges(positions, tile_tokens, page_size, span, sliding_window)
    # q_rows: [B, K, T * G, H], row r = token r // G, query head r % G of that KV head.
    q_rows = q.transpose(0, 2, 1, 3, 4).reshape(b, k, padded_t * g, h)
    # row_positions: [B, T * G, 1]: each row's query position, a column so it broadcasts against key positions.
    row_positions = jnp.repeat(positions, g, axis=1)[:, :, None]

    kernel = functools.partial(
        _attention_kernel,
        pages_per_row=num_pages_per_row,
        page_size=page_size,
        span=span,
        sliding_window=sliding_window,
        scale=h**-0.5 if scale is None else scale,
        logit_softcap=logit_softcap,
        num_tiles=num_tiles,
        heads_per_block=tiling.kv_heads_per_block,
        whole_kv_heads=tiling.kv_heads_per_block == k,
    )
    tile_rows = tile_tokens * g
    heads = tiling.kv_heads_per_block
    kv_dtype = layer_cache[0].dtype
    # Scalar-prefetch operands (block tables, page ranges) come first in every index map's arguments.
    q_spec = pl.BlockSpec((None, heads, tile_rows, h), lambda row, kv, tile, *_: (row, kv, tile, 0))
    grid_spec = pltpu.PrefetchScalarGridSpec(
        num_scalar_prefetch=3,
        grid=(b, k // heads, num_tiles),
        in_specs=[
            pl.BlockSpec((None, tile_rows, 1), lambda row, kv, tile, *_: (row, tile, 0)),
            q_spec,
            # The cache stays in HBM; the kernel copies the pages it needs itself (see _attention_kernel).
            pl.BlockSpec(memory_space=pl.ANY),
            pl.BlockSpec(memory_space=pl.ANY),
        ],
        out_specs=q_spec,
        scratch_shapes=[
            pltpu.VMEM((2, page_size, heads, h), kv_dtype),  # key pages: two slots
            pltpu.VMEM((2, page_size, heads, h), kv_dtype),  # value pages: two slots
            pltpu.SemaphoreType.DMA((2, 2)),  # [keys/values, slot]
            pltpu.VMEM((heads, tile_rows, 1), jnp.float32),  # running max of the scores
            pltpu.VMEM((heads, tile_rows, 1), jnp.float32),  # running sum of exp(score - max)
            pltpu.VMEM((heads, tile_rows, h), jnp.float32),  # running weighted sum of values
        ],
    )
    out_rows = pl.pallas_call(
        kernel,
        grid_spec=grid_spec,
        out_shape=jax.ShapeDtypeStruct(q_rows.shape, q.dtype),
        # No state crosses grid steps (the softmax state is reset per step), so every axis may be split
        # across TensorCores.
        compiler_params=pltpu.CompilerParams(dimension_semantics=("parallel", "parallel", "parallel")),
        interpret=interpret,
    )(
        block_tables.astype(jnp.int32).reshape(-1),  # flat: 2-D SMEM arrays pad their last dim to 128
        first_page.reshape(-1),
        page_count.reshape(-1),
        row_positions,
        q_rows,
        layer_cache[0],
        layer_cache[1],
    )
    out = out_rows.reshape(b, k, padded_t, g, h).transpose(0, 2, 1, 3, 4)
    return out[:, :t]


def _tile_page_ranges(
    positions: jax.Array, tile_tokens: int, page_size: int, span: int, sliding_window: int | None
) -> tuple[jax.Array, jax.Array]:
    """For each (row, query tile): the first block-table slot its real queries can see and how many slots
    from there ([B, num_tiles] int32 each; a count of 0 for a tile of padding only).

    The last slot holds the newest real query's own position; the first holds the oldest key inside the
    window of the oldest real query (key s is visible from p when s > p - window), else slot 0.
    """
    b, padded_t = positions.shape
    tiles = positions.reshape(b, padded_t // tile_tokens, tile_tokens)
    real = (tiles >= 0) & (tiles < span)
    newest = jnp.max(jnp.where(real, tiles, -1), axis=-1)
    has_real = newest >= 0
    last = newest // page_size
    if sliding_window is None:
        first = jnp.zeros_like(last)
    else:
        oldest = jnp.min(jnp.where(real, tiles, span), axis=-1)
        first = jnp.maximum(oldest - sliding_window + 1, 0) // page_size
    first = jnp.where(has_real, first, 0)
    count = jnp.where(has_real, last - first + 1, 0)
    return first.astype(jnp.int32), count.astype(jnp.int32)


def _attention_kernel(
    tables_ref: jax.Array,  # SMEM [B * P] page ids
    first_page_ref: jax.Array,  # SMEM [B * num_tiles] first block-table slot of each tile
    page_count_ref: jax.Array,  # SMEM [B * num_tiles] slots each tile reads
    row_positions_ref: jax.Array,  # VMEM [R, 1] query positions of this tile's rows
    q_ref: jax.Array,  # VMEM [heads, R, H]
    k_hbm: jax.Array,  # HBM [num_pages, page_size, K, H]
    v_hbm: jax.Array,  # HBM [num_pages, page_size, K, H]
    out_ref: jax.Array,  # VMEM [heads, R, H]
    k_pages: jax.Array,  # VMEM [2, page_size, heads, H]
    v_pages: jax.Array,  # VMEM [2, page_size, heads, H]
    copy_sems: jax.Array,  # DMA semaphores [2, 2]
    max_ref: jax.Array,  # VMEM [heads, R, 1] f32
    sum_ref: jax.Array,  # VMEM [heads, R, 1] f32
    acc_ref: jax.Array,  # VMEM [heads, R, H] f32
    *,
    pages_per_row: int,
    page_size: int,
    span: int,
    sliding_window: int | None,
    scale: float,
    logit_softcap: float | None,
    num_tiles: int,
    heads_per_block: int,
    whole_kv_heads: bool,
) -> None:
    """One (row, KV-head block, query tile): flash attention over the tile's pages, streamed from HBM.

    Pages are copied by hand (make_async_copy, two slots: page j + 1 is in flight while page j is used)
    rather than through a BlockSpec over a page grid axis, because the loop then runs exactly as many times
    as the tile has pages: a grid axis would be as long as the widest block table for every row, and each
    of its dead steps still costs a grid iteration on TPU (~0.35 us), which for decode batches over long
    tables outweighs the attention itself.
    """
    row = pl.program_id(0)
    kv_block = pl.program_id(1)
    tile = row * num_tiles + pl.program_id(2)
    first_page = first_page_ref[tile]
    page_count = page_count_ref[tile]
    # All heads: the page's whole contiguous slab; else a strided slice of the KV-head axis.
    heads = slice(None) if whole_kv_heads else pl.ds(kv_block * heads_per_block, heads_per_block)

    def copy_page(j: jax.Array, slot: jax.Array, *, wait: bool) -> None:
        """Start (or wait for) the copy of the tile's j-th page's keys and values into `slot`."""
        page = tables_ref[row * pages_per_row + first_page + j]
        for cache, pages, kind in ((k_hbm, k_pages, 0), (v_hbm, v_pages, 1)):
            copy = pltpu.make_async_copy(
                cache.at[page, :, heads, :], pages.at[slot], copy_sems.at[kind, slot]
            )
            if wait:
                copy.wait()
            else:
                copy.start()

    @pl.when(page_count > 0)
    def _() -> None:
        copy_page(jnp.int32(0), jnp.int32(0), wait=False)

    max_ref[...] = jnp.full(max_ref.shape, MASK_VALUE, jnp.float32)
    sum_ref[...] = jnp.zeros(sum_ref.shape, jnp.float32)
    acc_ref[...] = jnp.zeros(acc_ref.shape, jnp.float32)

    query_pos = row_positions_ref[...]  # [R, 1]
    is_query = (query_pos >= 0) & (query_pos < span)

    def attend_page(j: jax.Array, carry: None) -> None:
        slot = j % 2

        @pl.when(j + 1 < page_count)
        def _() -> None:
            copy_page(j + 1, 1 - slot, wait=False)

        copy_page(j, slot, wait=True)

        key_pos = (first_page + j) * page_size + jax.lax.broadcasted_iota(jnp.int32, (1, page_size), 1)
        visible = is_query & (key_pos <= query_pos)  # [R, page_size]
        if sliding_window is not None:
            visible &= key_pos > query_pos - sliding_window
        for head in range(heads_per_block):
            keys = k_pages[slot, :, head, :]  # [page_size, H]
            values = v_pages[slot, :, head, :]
            scores = jax.lax.dot_general(
                q_ref[head], keys, (((1,), (1,)), ((), ())), preferred_element_type=jnp.float32
            )  # [R, page_size]
            scores = scores * scale
            if logit_softcap is not None:
                scores = jnp.tanh(scores / logit_softcap) * logit_softcap
            scores = jnp.where(visible, scores, MASK_VALUE)
            previous_max = max_ref[head]
            new_max = jnp.maximum(previous_max, jnp.max(scores, axis=1, keepdims=True))
            probs = jnp.where(visible, jnp.exp(scores - new_max), 0.0)
            rescale = jnp.exp(previous_max - new_max)
            sum_ref[head] = rescale * sum_ref[head] + jnp.sum(probs, axis=1, keepdims=True)
            acc_ref[head] = rescale * acc_ref[head] + jnp.dot(
                probs.astype(values.dtype), values, preferred_element_type=jnp.float32
            )
            max_ref[head] = new_max

    jax.lax.fori_loop(0, page_count, attend_page, None)
    total = sum_ref[...]
    # Rows that saw no visible key (padding) have sum 0 and accumulator 0: divide by 1 to output zeros.
    out_ref[...] = (acc_ref[...] / jnp.where(total > 0, total, 1.0)).astype(out_ref.dtype)


def sharded_ragged_paged_attention(
    mesh: jax.sharding.Mesh | jax.sharding.AbstractMesh,
    q: jax.Array,
    layer_cache: tuple[jax.Array, jax.Array],
    block_tables: jax.Array,
    positions: jax.Array,
    sliding_window: int | None,
    *,
    scale: float | None = None,
    logit_softcap: float | None = None,
    interpret: bool = False,
) -> jax.Array:
    """`ragged_paged_attention` on a mesh with a "model" (tensor-parallel) axis.

    GSPMD cannot partition a pallas_call, so the kernel runs per device under shard_map: when the KV heads
    split evenly over "model", each device attends with its own KV heads (and their G query heads) over its
    slice of the cache, with no communication; otherwise every input is replicated over the mesh and each
    device computes the whole result (the cache is replicated in that layout anyway). Block tables and
    positions are always replicated: every head needs every row's pages.
    """
    heads_split = q.shape[2] % mesh.shape["model"] == 0
    q_spec = P(None, None, "model", None, None) if heads_split else P()
    cache_spec = P(None, None, "model", None) if heads_split else P()

    def attend_local(
        q: jax.Array, keys: jax.Array, values: jax.Array, block_tables: jax.Array, positions: jax.Array
    ) -> jax.Array:
        return ragged_paged_attention(
            q,
            (keys, values),
            block_tables,
            positions,
            sliding_window,
            scale=scale,
            logit_softcap=logit_softcap,
            interpret=interpret,
        )

    sharded = jax.shard_map(
        attend_local,
        mesh=mesh,
        in_specs=(q_spec, cache_spec, cache_spec, P(), P()),
        out_specs=q_spec,
        # With check_vma, pallas_call would need each out_shape to say how it varies over the mesh axes;
        # the specs above already state that, once.
        check_vma=False,
    )
    return sharded(q, layer_cache[0], layer_cache[1], block_tables, positions)
