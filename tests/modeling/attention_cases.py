"""Random paged-attention calls for the attention tests: queries, a shuffled page pool, tables, positions.

Tolerances against the reference: float32 results differ by summation order only, so 1e-5; bfloat16 by up to
one bfloat16 ulp at magnitude 1-2, so 2e-2.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from jaxserve.engine.runner import ModelRunner

PADDING = ModelRunner.PAD_POSITION  # where the runner puts padding query tokens
TOLERANCE = {jnp.float32: 1e-5, jnp.bfloat16: 2e-2}


@dataclasses.dataclass(frozen=True)
class Case:
    """One attention call: queries [B, T, K, G, H], a cache [N, page_size, K, H] x 2, tables, positions."""

    q: jax.Array
    cache: tuple[jax.Array, jax.Array]
    block_tables: jax.Array
    positions: jax.Array

    @property
    def real(self) -> np.ndarray:
        """[B, T]: which query tokens are real (inside their row's pages)."""
        span = self.block_tables.shape[1] * self.cache[0].shape[1]
        positions = np.asarray(self.positions)
        return (positions >= 0) & (positions < span)


def make_case(
    positions: list[list[int]],
    *,
    pages_per_row: int,
    page_size: int = 4,
    kv_heads: int = 2,
    groups: int = 2,
    head_dim: int = 8,
    dtype: jnp.dtype = jnp.float32,
    seed: int = 0,
) -> Case:
    """Random queries and cache; every row with a real token owns `pages_per_row` distinct pages in shuffled
    order (never page 0, which padding rows point at); rows of padding only have all-zero tables."""
    rng = np.random.default_rng(seed)
    batch, tokens = len(positions), len(positions[0])
    num_pages = 1 + batch * pages_per_row
    table = 1 + rng.permutation(batch * pages_per_row).reshape(batch, pages_per_row)
    pos = np.asarray(positions, np.int32)
    table[(pos >= PADDING).all(axis=1)] = 0

    def normal(*shape: int) -> jax.Array:
        return jnp.asarray(rng.normal(size=shape), dtype)

    cache_shape = (num_pages, page_size, kv_heads, head_dim)
    return Case(
        q=normal(batch, tokens, kv_heads, groups, head_dim),
        cache=(normal(*cache_shape), normal(*cache_shape)),
        block_tables=jnp.asarray(table, jnp.int32),
        positions=jnp.asarray(pos),
    )
