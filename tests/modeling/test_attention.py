"""The chunked decode attention path against the reference, and when "auto" takes it.

Tolerances (tests.modeling.attention_cases): float32 differs from the reference by summation order only
(<= ~3e-7 on these cases); bfloat16 caches by up to one bfloat16 ulp at magnitude 1-2.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxserve.modeling import attention
from jaxserve.modeling.attention import (
    chunked_decode_attention,
    paged_attention,
    reference_paged_attention,
    uses_chunked_decode,
)
from tests.modeling.attention_cases import PADDING, TOLERANCE, Case, make_case

PAGE_SIZE = 4
PAGES_PER_ROW = 5  # an odd number of pages: the last chunk of two pages is half padding


@pytest.fixture(autouse=True)
def two_page_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Chunks of two 4-position pages, so these small caches take several loop iterations."""
    monkeypatch.setattr(attention, "DECODE_CHUNK_POSITIONS", 2 * PAGE_SIZE)


def decode_case(positions: list[int], *, pages_per_row: int = PAGES_PER_ROW, **options: Any) -> Case:
    """One query token per row at `positions`, through `make_case` (K, G, page size, dtype, seed in options)."""
    return make_case([[p] for p in positions], pages_per_row=pages_per_row, page_size=PAGE_SIZE, **options)


def assert_matches_reference(case: Case, window: int | None, **kwargs: float | None) -> None:
    """Both paths through jit (as the model runs them); real rows must agree, every row must be finite."""

    def run(fn):  # type: ignore[no-untyped-def]
        jitted = jax.jit(lambda *a: fn(*a, window, **kwargs))
        return np.asarray(jitted(case.q, case.cache, case.block_tables, case.positions))

    chunked = run(chunked_decode_attention)
    reference = run(reference_paged_attention)
    assert chunked.shape == reference.shape == case.q.shape
    assert np.all(np.isfinite(chunked))
    real = case.real[:, 0]
    np.testing.assert_allclose(chunked[real], reference[real], atol=TOLERANCE[jnp.float32])


@pytest.mark.parametrize("kv_heads,groups", [(1, 1), (1, 4), (2, 3), (3, 3), (4, 2)])
@pytest.mark.parametrize("window,softcap,scale", [(None, None, None), (5, None, None), (None, 20.0, 0.3)])
def test_chunked_decode_matches_the_reference(
    kv_heads: int, groups: int, window: int | None, softcap: float | None, scale: float | None
) -> None:
    # Rows at the first position, mid-page, at a page boundary, at a chunk boundary, in the half-padded last
    # chunk, at the last position, and a padding row.
    case = decode_case([0, 5, 4, 8, 17, 19, PADDING], kv_heads=kv_heads, groups=groups)
    assert case.real[:, 0].tolist() == [True] * 6 + [False]
    assert_matches_reference(case, window, scale=scale, logit_softcap=softcap)


def test_a_sliding_window_skips_the_chunks_no_row_sees() -> None:
    # Every row is at position 13 or later: with a window of 5 the loop starts at the second chunk.
    case = decode_case([13, 17, 19, PADDING], kv_heads=2, groups=2, seed=3)
    assert_matches_reference(case, 5)


def test_a_batch_of_only_padding_rows_is_finite() -> None:
    case = decode_case([PADDING, PADDING], kv_heads=2, groups=2, seed=4)
    for window in (None, 5):
        out = chunked_decode_attention(case.q, case.cache, case.block_tables, case.positions, window)
        assert np.all(np.isfinite(np.asarray(out)))


@pytest.mark.parametrize("page_size,pages_per_row", [(16, 3), (4, 1)])
def test_pages_longer_than_a_chunk_and_a_table_shorter_than_one(
    monkeypatch: pytest.MonkeyPatch, page_size: int, pages_per_row: int
) -> None:
    monkeypatch.setattr(attention, "DECODE_CHUNK_POSITIONS", 8)
    span = page_size * pages_per_row
    positions = [[0], [span // 2], [span - 1]]
    case = make_case(positions, kv_heads=3, groups=3, page_size=page_size, pages_per_row=pages_per_row)
    assert_matches_reference(case, None)


def test_chunked_decode_matches_the_reference_on_a_bfloat16_cache() -> None:
    case = decode_case([3, 9, 19], kv_heads=3, groups=3, dtype=jnp.bfloat16, seed=1)
    args = (case.q, case.cache, case.block_tables, case.positions, None)
    chunked = chunked_decode_attention(*args)
    reference = reference_paged_attention(*args)
    assert chunked.dtype == jnp.bfloat16
    np.testing.assert_allclose(
        np.asarray(chunked, np.float32), np.asarray(reference, np.float32), atol=TOLERANCE[jnp.bfloat16]
    )


def test_auto_chunks_single_token_steps_on_cpu() -> None:
    assert jax.default_backend() == "cpu"
    assert uses_chunked_decode(jnp.zeros((2, 1, 3, 3, 8)))
    assert uses_chunked_decode(jnp.zeros((2, 1, 8, 1, 8)))  # any number of KV heads
    assert not uses_chunked_decode(jnp.zeros((1, 4, 3, 3, 8)))  # a prompt chunk


@pytest.mark.parametrize("impl", ["auto", "chunked"])
def test_the_dispatcher_runs_the_chunked_path_for_decode_and_the_reference_for_chunks(
    impl: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As "auto" runs when the native kernel cannot be built (tests/modeling/test_native_attention.py covers
    # the kernel).
    monkeypatch.setattr(attention, "uses_native", lambda q, cache: False)
    case = decode_case([2, 7], kv_heads=3, groups=3, seed=2)
    q, cache, tables, positions = case.q, case.cache, case.block_tables, case.positions
    decoded = paged_attention(q, cache, tables, positions, None, impl=impl)  # type: ignore[arg-type]
    np.testing.assert_array_equal(
        np.asarray(decoded), np.asarray(chunked_decode_attention(q, cache, tables, positions, None))
    )
    chunk_q = jnp.concatenate([q, q], axis=1)  # two query tokens per row
    chunk_positions = jnp.concatenate([positions, positions + 1], axis=1)
    chunk = paged_attention(chunk_q, cache, tables, chunk_positions, None, impl=impl)  # type: ignore[arg-type]
    expected = reference_paged_attention(chunk_q, cache, tables, chunk_positions, None)
    np.testing.assert_array_equal(np.asarray(chunk), np.asarray(expected))


def test_chunked_decode_on_an_eight_device_mesh_matches_one_device() -> None:
    """Under a mesh the loop bounds are reductions over the batch; rows and KV heads split over devices."""
    case = decode_case([1, 6, 11, 19, 3, 8, 14, PADDING], kv_heads=4, groups=2, seed=5)
    q, cache, tables, positions = case.q, case.cache, case.block_tables, case.positions
    expected = np.asarray(chunked_decode_attention(q, cache, tables, positions, None))
    mesh = jax.sharding.Mesh(np.asarray(jax.devices()[:8]).reshape(4, 2), ("data", "model"))
    spec = jax.sharding.PartitionSpec
    with jax.set_mesh(mesh):
        placed = (
            jax.device_put(q, jax.NamedSharding(mesh, spec("data", None, "model"))),
            tuple(jax.device_put(c, jax.NamedSharding(mesh, spec(None, None, "model"))) for c in cache),
            jax.device_put(tables, jax.NamedSharding(mesh, spec("data"))),
            jax.device_put(positions, jax.NamedSharding(mesh, spec("data"))),
        )
        got = jax.jit(lambda q, c, t, p: chunked_decode_attention(q, c, t, p, None))(*placed)
    np.testing.assert_allclose(np.asarray(got), expected, atol=TOLERANCE[jnp.float32])
