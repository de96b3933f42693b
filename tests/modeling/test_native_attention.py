"""The native paged attention kernel against the reference, and when "auto" takes it.

The kernel is built with the machine's C++ compiler on first use; without one these tests are skipped (and
"auto" keeps the pure-JAX paths, which tests/modeling/test_attention.py covers).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxserve.modeling import native_attention, native_library
from jaxserve.modeling.attention import (
    chunked_decode_attention,
    paged_attention,
    reference_paged_attention,
    uses_native,
)
from tests.modeling.attention_cases import PADDING, TOLERANCE, Case, make_case

pytestmark = pytest.mark.skipif(
    not native_library.available(), reason="the native kernel could not be built (no C++ compiler?)"
)


def decode_case(positions: list[int], **options: Any) -> Case:
    options.setdefault("pages_per_row", 5)
    return make_case([[p] for p in positions], **options)


def native(case: Case, window: int | None = None, **kwargs: float | None) -> np.ndarray:
    jitted = jax.jit(lambda *a: native_attention.paged_attention(*a, window, **kwargs))
    return np.asarray(jitted(case.q, case.cache, case.block_tables, case.positions))


def reference(case: Case, window: int | None = None, **kwargs: float | None) -> np.ndarray:
    return np.asarray(
        reference_paged_attention(case.q, case.cache, case.block_tables, case.positions, window, **kwargs)
    )


@pytest.mark.parametrize(
    "kv_heads,groups,head_dim", [(1, 1, 8), (1, 4, 8), (2, 3, 16), (3, 3, 64), (4, 2, 5)]
)
@pytest.mark.parametrize("window,softcap,scale", [(None, None, None), (5, None, None), (None, 20.0, 0.3)])
def test_the_kernel_matches_the_reference(
    kv_heads: int, groups: int, head_dim: int, window: int | None, softcap: float | None, scale: float | None
) -> None:
    # Rows at the first position, mid-page, at a page boundary, later pages, the last position, padding.
    case = decode_case([0, 5, 4, 8, 17, 19, PADDING], kv_heads=kv_heads, groups=groups, head_dim=head_dim)
    got = native(case, window, scale=scale, logit_softcap=softcap)
    expected = reference(case, window, scale=scale, logit_softcap=softcap)
    assert got.shape == case.q.shape and got.dtype == np.float32
    real = case.real[:, 0]
    np.testing.assert_allclose(got[real], expected[real], atol=TOLERANCE[jnp.float32])
    np.testing.assert_array_equal(got[~real], 0.0)  # padding rows


def test_long_pages_and_a_large_batch() -> None:
    positions = list(np.random.default_rng(7).integers(0, 96, size=40))
    case = decode_case(positions, kv_heads=3, groups=3, head_dim=64, page_size=16, pages_per_row=6, seed=7)
    np.testing.assert_allclose(native(case), reference(case), atol=TOLERANCE[jnp.float32])


def test_a_table_entry_outside_the_pool_is_clamped_not_read() -> None:
    case = decode_case([9, 3], kv_heads=2, groups=2)
    tables = case.block_tables.at[0, 1].set(1 << 20).at[1, 0].set(-5)
    got = native(Case(case.q, case.cache, tables, case.positions))
    assert np.all(np.isfinite(got))


def test_auto_runs_the_kernel_for_float32_on_one_device_only() -> None:
    case = decode_case([2, 7, 13], kv_heads=3, groups=3, seed=2)
    args = (case.q, case.cache, case.block_tables, case.positions, None)
    assert uses_native(case.q, case.cache)
    np.testing.assert_array_equal(np.asarray(jax.jit(lambda *a: paged_attention(*a))(*args)), native(case))

    bf16 = decode_case([2, 7], kv_heads=3, groups=3, dtype=jnp.bfloat16)
    assert not uses_native(bf16.q, bf16.cache)
    assert (
        native_attention.unsupported_reason(bf16.q, bf16.cache) == "it takes float32 queries and caches only"
    )
    with pytest.raises(ValueError, match="native attention kernel cannot run: it takes float32"):
        paged_attention(bf16.q, bf16.cache, bf16.block_tables, bf16.positions, None, impl="native")

    mesh = jax.sharding.Mesh(np.asarray(jax.devices()[:2]), ("model",))
    with jax.set_mesh(mesh):
        assert not uses_native(case.q, case.cache)
        on_mesh = jax.jit(lambda *a: paged_attention(*a))(*args)
    np.testing.assert_allclose(
        np.asarray(on_mesh), np.asarray(chunked_decode_attention(*args)), atol=TOLERANCE[jnp.float32]
    )


@pytest.mark.parametrize("window,softcap", [(None, None), (3, None), (None, 20.0)])
def test_prompt_chunks_match_the_reference(window: int | None, softcap: float | None) -> None:
    # A chunk from the start, one continuing a cached prefix across a page boundary, one ending in padding
    # tokens, and a row of padding only.
    positions = [[0, 1, 2, 3, 4], [6, 7, 8, 9, 10], [15, 16, PADDING, PADDING, PADDING], [PADDING] * 5]
    case = make_case(positions, pages_per_row=5, kv_heads=3, groups=2, head_dim=16, seed=9)
    got = native(case, window, logit_softcap=softcap)
    expected = reference(case, window, logit_softcap=softcap)
    assert got.shape == case.q.shape
    np.testing.assert_allclose(got[case.real], expected[case.real], atol=TOLERANCE[jnp.float32])
    np.testing.assert_array_equal(got[~case.real], 0.0)
    args = (case.q, case.cache, case.block_tables, case.positions, window)
    np.testing.assert_array_equal(
        np.asarray(paged_attention(*args, logit_softcap=softcap, impl="native")),
        np.asarray(native_attention.paged_attention(*args, logit_softcap=softcap)),
    )


@pytest.mark.parametrize("window", [None, 21])
def test_long_prompt_chunks_in_query_blocks_match_the_reference(window: int | None) -> None:
    """Chunks longer than the kernel's query block (16): a full chunk from position 0, one continuing a
    cached prefix mid-page, one whose last block is part padding, at the default model's head sizes."""
    tokens = 40
    positions = [
        list(range(tokens)),
        list(range(23, 23 + tokens)),
        list(range(50, 50 + 35)) + [PADDING] * 5,
    ]
    case = make_case(positions, pages_per_row=6, page_size=16, kv_heads=3, groups=3, head_dim=64, seed=11)
    got = native(case, window)
    np.testing.assert_allclose(
        got[case.real], reference(case, window)[case.real], atol=TOLERANCE[jnp.float32]
    )
    np.testing.assert_array_equal(got[~case.real], 0.0)
