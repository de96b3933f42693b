"""The folded decode attention path against the reference, and when "auto" takes it.

Tolerance: float32 results differ from the reference by summation order only (<= ~3e-7 on these cases), so
1e-5; bfloat16 caches by up to one bfloat16 ulp at magnitude 1-2, so 2e-2.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxserve.engine.runner import ModelRunner
from jaxserve.modeling.attention import (
    FOLDED_MAX_KV_HEADS,
    folded_decode_attention,
    paged_attention,
    reference_paged_attention,
    uses_folded_decode,
)

PADDING = ModelRunner.PAD_POSITION  # where the runner puts padding query tokens
TOLERANCE = {jnp.float32: 1e-5, jnp.bfloat16: 2e-2}


def decode_case(
    positions: list[int],
    *,
    kv_heads: int,
    groups: int,
    pages_per_row: int = 3,
    page_size: int = 4,
    head_dim: int = 8,
    dtype: jnp.dtype = jnp.float32,
    seed: int = 0,
) -> tuple[jax.Array, tuple[jax.Array, jax.Array], jax.Array, jax.Array]:
    """Queries [B, 1, K, G, H], a random cache, each row's pages drawn at random from a shared pool."""
    rng = np.random.default_rng(seed)
    batch = len(positions)
    num_pages = batch * pages_per_row + 2
    cache = tuple(
        jnp.asarray(rng.standard_normal((num_pages, page_size, kv_heads, head_dim)), dtype) for _ in range(2)
    )
    tables = rng.permutation(num_pages)[: batch * pages_per_row].reshape(batch, pages_per_row)
    q = jnp.asarray(rng.standard_normal((batch, 1, kv_heads, groups, head_dim)), dtype)
    return (
        q,
        (cache[0], cache[1]),
        jnp.asarray(tables, jnp.int32),
        jnp.asarray([[p] for p in positions], jnp.int32),
    )


@pytest.mark.parametrize("kv_heads,groups", [(1, 1), (1, 4), (2, 3), (3, 3), (4, 2)])
@pytest.mark.parametrize("window,softcap,scale", [(None, None, None), (5, None, None), (None, 20.0, 0.3)])
def test_folded_decode_matches_the_reference(
    kv_heads: int, groups: int, window: int | None, softcap: float | None, scale: float | None
) -> None:
    # Rows at the first position, mid-page, at a page boundary, at the last position, and a padding row.
    q, cache, tables, positions = decode_case([0, 5, 8, 11, PADDING], kv_heads=kv_heads, groups=groups)
    args = (q, cache, tables, positions, window)
    folded = folded_decode_attention(*args, scale=scale, logit_softcap=softcap)
    reference = reference_paged_attention(*args, scale=scale, logit_softcap=softcap)
    assert folded.shape == reference.shape == q.shape
    assert np.all(np.isfinite(np.asarray(folded)))
    np.testing.assert_allclose(np.asarray(folded)[:4], np.asarray(reference)[:4], atol=TOLERANCE[jnp.float32])


def test_folded_decode_matches_the_reference_on_a_bfloat16_cache() -> None:
    q, cache, tables, positions = decode_case([3, 9, 11], kv_heads=3, groups=3, dtype=jnp.bfloat16, seed=1)
    folded = folded_decode_attention(q, cache, tables, positions, None)
    reference = reference_paged_attention(q, cache, tables, positions, None)
    assert folded.dtype == jnp.bfloat16
    np.testing.assert_allclose(
        np.asarray(folded, np.float32), np.asarray(reference, np.float32), atol=TOLERANCE[jnp.bfloat16]
    )


def test_auto_folds_single_token_steps_on_one_cpu_device_only() -> None:
    assert jax.default_backend() == "cpu"
    one_token = jnp.zeros((2, 1, 3, 3, 8))
    assert uses_folded_decode(one_token)
    assert not uses_folded_decode(jnp.zeros((1, 4, 3, 3, 8)))  # a prompt chunk
    assert not uses_folded_decode(jnp.zeros((2, 1, FOLDED_MAX_KV_HEADS + 1, 1, 8)))
    assert len(jax.devices()) > 1  # tests/conftest.py asks for 8 host devices
    for devices in (jax.devices()[:1], jax.devices()):
        mesh = jax.sharding.Mesh(np.asarray(devices), ("model",))
        with jax.set_mesh(mesh):  # as the runner traces its steps
            assert uses_folded_decode(one_token) == (len(devices) == 1)


@pytest.mark.parametrize("impl", ["auto", "folded"])
def test_the_dispatcher_runs_the_folded_path_for_decode_and_the_reference_for_chunks(impl: str) -> None:
    q, cache, tables, positions = decode_case([2, 7], kv_heads=3, groups=3, seed=2)
    decoded = paged_attention(q, cache, tables, positions, None, impl=impl)  # type: ignore[arg-type]
    np.testing.assert_array_equal(
        np.asarray(decoded), np.asarray(folded_decode_attention(q, cache, tables, positions, None))
    )
    chunk_q = jnp.concatenate([q, q], axis=1)  # two query tokens per row
    chunk_positions = jnp.concatenate([positions, positions + 1], axis=1)
    chunk = paged_attention(chunk_q, cache, tables, chunk_positions, None, impl=impl)  # type: ignore[arg-type]
    expected = reference_paged_attention(chunk_q, cache, tables, chunk_positions, None)
    np.testing.assert_array_equal(np.asarray(chunk), np.asarray(expected))
