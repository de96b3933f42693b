"""A contiguous per-slot key/value cache: each running sequence owns one row of max_len positions.

The cache is a pytree passed into and returned from each jitted step (and donated), so the model
itself owns no mutable state. A step works on a contiguous run of rows starting at `row_start`
(decode: rows 0..B-1; a prefill chunk: the one row of its sequence), so reads are plain slices.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp

from jaxserve.modeling.config import ModelConfig


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class SlotKVCache:
    """Per layer a (keys, values) pair, each [slots, max_len, K, H]."""

    layers: tuple[tuple[jax.Array, jax.Array], ...]

    @classmethod
    def allocate(cls, cfg: ModelConfig, num_slots: int, max_len: int, dtype: jnp.dtype) -> SlotKVCache:
        shape = (num_slots, max_len, cfg.num_kv_heads, cfg.head_dim)
        return cls(
            layers=tuple((jnp.zeros(shape, dtype), jnp.zeros(shape, dtype)) for _ in range(cfg.num_layers))
        )


def write_rows(
    layer_cache: tuple[jax.Array, jax.Array],
    k: jax.Array,
    v: jax.Array,
    row_start: jax.Array,
    positions: jax.Array,
) -> tuple[jax.Array, jax.Array]:
    """Store new keys/values ([B, T, K, H]) of row b at (row_start + b, positions[b, t]).

    Positions at or past the end of the cache are dropped: padding tokens and padding rows point
    there on purpose so they never overwrite a live sequence's entries.
    """
    cache_k, cache_v = layer_cache
    b, t = positions.shape
    rows = jnp.broadcast_to((row_start + jnp.arange(b, dtype=jnp.int32))[:, None], (b, t))
    cache_k = cache_k.at[rows, positions].set(k.astype(cache_k.dtype), mode="drop")
    cache_v = cache_v.at[rows, positions].set(v.astype(cache_v.dtype), mode="drop")
    return cache_k, cache_v


def read_rows(
    layer_cache: tuple[jax.Array, jax.Array], row_start: jax.Array, rows: int, kv_len: int
) -> tuple[jax.Array, jax.Array]:
    """The first kv_len positions of `rows` rows from row_start: [rows, kv_len, K, H] keys and values."""
    cache_k, cache_v = layer_cache
    start = (row_start, 0, 0, 0)
    size = (rows, kv_len, cache_k.shape[2], cache_k.shape[3])
    return jax.lax.dynamic_slice(cache_k, start, size), jax.lax.dynamic_slice(cache_v, start, size)
