"""The Pallas ragged paged-attention kernel, run by the Pallas interpreter on CPU, against the reference.

Only real query tokens are compared (positions inside the row's block table); padding tokens must only be
finite. Tolerances, measured on these cases: float32 differs from the reference by <= ~5e-7 (summation
order of the online softmax), so 1e-5; bfloat16 by <= 7.8e-3, one bfloat16 ulp at magnitude 1-2 (the kernel rounds unnormalised probabilities
to bfloat16, the reference normalised ones), so 2e-2.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxserve.modeling.attention import AttentionImpl, paged_attention, reference_paged_attention
from jaxserve.modeling.decoder import Decoder
from jaxserve.modeling.kv_cache import PagedKVCache
from jaxserve.modeling.loader import LoadedModel, load_model
from jaxserve.modeling.pallas_attention import (
    ragged_paged_attention,
    sharded_ragged_paged_attention,
    supports,
    unsupported_reason,
)
from tests.modeling.attention_cases import PADDING, TOLERANCE, Case, make_case
from tests.modeling.parity import load_golden
from tests.modeling.tiny_checkpoints import write_tiny_checkpoint


def kernel_output(case: Case, window: int | None = None, **options: Any) -> np.ndarray:
    out = ragged_paged_attention(
        case.q, case.cache, case.block_tables, case.positions, window, interpret=True, **options
    )
    assert out.shape == case.q.shape and out.dtype == case.q.dtype
    out32 = np.asarray(out.astype(jnp.float32))
    assert np.isfinite(out32).all(), "padding queries must come out finite too"
    return out32


def reference_output(case: Case, window: int | None = None, **options: Any) -> np.ndarray:
    out = reference_paged_attention(case.q, case.cache, case.block_tables, case.positions, window, **options)
    return np.asarray(out.astype(jnp.float32))


def assert_matches_reference(case: Case, window: int | None = None, **options: Any) -> None:
    scores = {k: options.pop(k) for k in ("scale", "logit_softcap") if k in options}
    ours = kernel_output(case, window, **scores, **options)
    reference = reference_output(case, window, **scores)
    atol = TOLERANCE[case.q.dtype.type]
    np.testing.assert_allclose(ours[case.real], reference[case.real], atol=atol, rtol=0)


def test_decode_only_batch_matches_reference() -> None:
    case = make_case([[0], [5], [11], [7]], pages_per_row=3)
    assert_matches_reference(case)


def test_prefill_only_matches_reference() -> None:
    case = make_case([list(range(8)), list(range(8))], pages_per_row=2)
    assert_matches_reference(case)


def test_mixed_batch_of_prefill_chunk_decodes_and_padding_rows() -> None:
    pad = [PADDING] * 5
    case = make_case(
        [[0, 1, 2, 3, 4], [9] + pad[1:], [2] + pad[1:], pad, [6, 7, 8, PADDING, PADDING]], pages_per_row=3
    )
    assert_matches_reference(case)


def test_chunked_prefill_mid_sequence_sees_the_cached_prefix() -> None:
    """A chunk at positions 10..15 over a 10-token prefix already in the pages, cut into query tiles of 2
    tokens, so later tiles read more pages than earlier ones."""
    case = make_case([list(range(10, 16)), [3] + [PADDING] * 5], pages_per_row=4)
    assert_matches_reference(case)
    assert_matches_reference(case, query_tile_tokens=2)


@pytest.mark.parametrize("groups", [1, 2, 4])
def test_grouped_query_heads_share_their_kv_head(groups: int) -> None:
    case = make_case(
        [list(range(3, 7)), [1, 2, PADDING, PADDING]], pages_per_row=2, groups=groups, kv_heads=2
    )
    assert_matches_reference(case)


def test_one_kv_head_per_grid_block_matches_all_heads_per_block() -> None:
    case = make_case([list(range(4, 9)), [6] + [PADDING] * 4], pages_per_row=3, kv_heads=3)
    assert_matches_reference(case, kv_heads_per_block=1)


@pytest.mark.parametrize(
    "window, positions",
    [
        (3, [[9, 10, 11, 12, 13], [14] + [PADDING] * 4]),  # window narrower than a 4-token page
        (6, [[5, 6, 7, 8, 9], [3, 4, 5, 6, 7]]),  # chunks whose window's edge moves across pages
        (6, [list(range(10, 15)), [0, 1, 2, 3, 4]]),  # the first pages are outside every query's window
    ],
)
def test_sliding_window_masks_old_keys(window: int, positions: list[list[int]]) -> None:
    case = make_case(positions, pages_per_row=4)
    assert_matches_reference(case, window)
    assert_matches_reference(case, window, query_tile_tokens=2)


@pytest.mark.parametrize("scale, logit_softcap", [(0.05, None), (None, 2.0), (0.7, 1.5)])
def test_custom_scale_and_logit_softcap(scale: float | None, logit_softcap: float | None) -> None:
    case = make_case([list(range(2, 7)), [4] + [PADDING] * 4], pages_per_row=2)
    assert_matches_reference(case, 5, scale=scale, logit_softcap=logit_softcap)


@pytest.mark.parametrize("page_size", [4, 8, 16])
def test_page_sizes(page_size: int) -> None:
    last = 3 * page_size - 2
    case = make_case(
        [[last - 3, last - 2, last - 1, last], [page_size] + [PADDING] * 3],
        pages_per_row=3,
        page_size=page_size,
    )
    assert_matches_reference(case)
    assert_matches_reference(case, page_size + 1)


def test_page_ids_in_any_order_give_the_same_result() -> None:
    """The same keys stored in pages 1, 2, 3 or in pages 3, 1, 2 (the table says where): same output."""
    case = make_case([[8, 9, 10]], pages_per_row=3)
    order = jnp.asarray([2, 0, 1])
    stored_in_order = Case(
        case.q,
        tuple(c.at[1 + order].set(c[case.block_tables[0]]) for c in case.cache),  # type: ignore[arg-type]
        1 + order[None],
        case.positions,
    )
    np.testing.assert_array_equal(kernel_output(stored_in_order), kernel_output(case))
    assert_matches_reference(stored_in_order)


def test_freed_pages_outside_the_window_do_not_change_results() -> None:
    """Slots 0 and 1 hold positions 0..7, outside the 4-token window of queries at 12..14: the engine frees
    them and points them at page 0. Page 0 filled with 1e4 must not matter; filled with NaN it shows the
    kernel skips those slots rather than masking them (masked NaN values still poison the sum: 0 * NaN)."""
    case = make_case([[12, 13, 14]], pages_per_row=4)
    freed_table = case.block_tables.at[0, :2].set(0)
    expected = kernel_output(case, 4)
    np.testing.assert_allclose(expected, reference_output(case, 4), atol=1e-5, rtol=0)
    for fill in (1e4, jnp.nan):
        garbage = tuple(c.at[0].set(fill) for c in case.cache)
        freed = Case(case.q, garbage, freed_table, case.positions)  # type: ignore[arg-type]
        np.testing.assert_array_equal(kernel_output(freed, 4), expected)


def test_pages_past_each_rows_last_needed_page_are_never_read() -> None:
    """Row 0 needs slots 0-1 (positions up to 5), row 1 slot 0, row 2 nothing; every other page of the pool,
    including the unused tail of each table, is NaN. Any read of one would turn outputs NaN."""
    case = make_case([[4, 5], [2, PADDING], [PADDING, PADDING]], pages_per_row=4)
    needed = {int(case.block_tables[0, 0]), int(case.block_tables[0, 1]), int(case.block_tables[1, 0])}
    unneeded = jnp.asarray([p for p in range(case.cache[0].shape[0]) if p not in needed])
    poisoned = Case(
        case.q,
        tuple(c.at[unneeded].set(jnp.nan) for c in case.cache),  # type: ignore[arg-type]
        case.block_tables,
        case.positions,
    )
    ours = kernel_output(poisoned)  # asserts finite, padding rows included
    np.testing.assert_allclose(ours[case.real], reference_output(case)[case.real], atol=1e-5, rtol=0)
    np.testing.assert_array_equal(ours, kernel_output(case))


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_float32_and_bfloat16_within_stated_tolerance(dtype: jnp.dtype) -> None:
    case = make_case([list(range(5, 11)), [13] + [PADDING] * 5], pages_per_row=4, dtype=dtype, head_dim=16)
    assert_matches_reference(case, 7)


@pytest.mark.parametrize("kv_heads", [4, 2])
def test_sharded_over_model_axis_matches_reference(kv_heads: int) -> None:
    """4 KV heads split one per device; 2 do not divide the 4-way axis and run replicated."""
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:4]).reshape(1, 4), ("data", "model"))
    case = make_case([[5, 6, 7], [2, PADDING, PADDING]], pages_per_row=2, kv_heads=kv_heads)

    @jax.jit
    def attend(
        q: jax.Array, cache: tuple[jax.Array, jax.Array], tables: jax.Array, pos: jax.Array
    ) -> jax.Array:
        return sharded_ragged_paged_attention(mesh, q, cache, tables, pos, 3, interpret=True)

    out = attend(case.q, case.cache, case.block_tables, case.positions)
    expected_spec = (
        jax.sharding.PartitionSpec(None, None, "model") if kv_heads == 4 else jax.sharding.PartitionSpec()
    )
    assert out.sharding.spec == expected_spec
    np.testing.assert_allclose(
        np.asarray(out)[case.real], reference_output(case, 3)[case.real], atol=1e-5, rtol=0
    )


def test_supports_names_shapes_a_tpu_cannot_take() -> None:
    cache = (jax.ShapeDtypeStruct((64, 16, 2, 128), jnp.bfloat16),) * 2
    assert supports(jax.ShapeDtypeStruct((4, 1, 2, 4, 128), jnp.bfloat16), cache)
    assert supports(jax.ShapeDtypeStruct((4, 512, 2, 4, 128), jnp.bfloat16), cache)
    narrow = (jax.ShapeDtypeStruct((64, 16, 2, 64), jnp.bfloat16),) * 2
    assert "head width 64" in str(
        unsupported_reason(jax.ShapeDtypeStruct((4, 1, 2, 4, 64), jnp.bfloat16), narrow)
    )
    small_pages = (jax.ShapeDtypeStruct((64, 8, 2, 128), jnp.bfloat16),) * 2
    assert not supports(jax.ShapeDtypeStruct((4, 1, 2, 4, 128), jnp.bfloat16), small_pages)  # bf16 needs 16


def test_dispatcher_forced_choices() -> None:
    case = make_case([[3, 4]], pages_per_row=2)
    args = (case.q, case.cache, case.block_tables, case.positions, None)
    np.testing.assert_allclose(
        np.asarray(paged_attention(*args, impl="pallas_interpret")), reference_output(case), atol=1e-5, rtol=0
    )
    np.testing.assert_array_equal(
        np.asarray(paged_attention(*args, impl="reference")), reference_output(case)
    )
    if jax.default_backend() != "tpu":  # the reference, or on CPU the native kernel where it builds
        np.testing.assert_allclose(
            np.asarray(paged_attention(*args)), reference_output(case), atol=1e-5, rtol=0
        )
    with pytest.raises(ValueError, match="head width 8"):
        paged_attention(*args, impl="pallas")


def _decoder_with(model: LoadedModel, attention_impl: AttentionImpl) -> nnx.GraphDef:
    """The loaded model's graph with another attention implementation (its state merges into either)."""
    abstract = nnx.eval_shape(
        lambda: Decoder(
            model.config, dtype=model.dtype, attention_impl=attention_impl, feature_major=model.feature_major
        )
    )
    return nnx.split(abstract)[0]


def test_decoder_with_pallas_attention_matches_reference_through_the_paged_cache(tmp_path: Path) -> None:
    """Tiny Gemma 3 (a 4-token window on its first layer, a non-default scale): the 12-token golden prompt as
    a prefill chunk of 8 then one of 4 (+4 padding), then greedy decode steps, over 4-token pages given in
    shuffled order. Logits agree at every step and the greedy tokens are the transformers golden's."""
    golden = load_golden("tiny_gemma3.json")
    model = load_model(write_tiny_checkpoint("gemma3", tmp_path), "float32")
    with pytest.raises(ValueError, match="attention_impl"):
        Decoder(model.config, attention_impl="fast")  # type: ignore[arg-type]
    table = jnp.asarray([[3, 0, 4, 1, 2]], jnp.int32)
    prompt = golden["token_ids"]

    @nnx.jit
    def step(
        decoder: Decoder, tokens: jax.Array, positions: jax.Array, cache: PagedKVCache
    ) -> tuple[jax.Array, PagedKVCache]:
        hidden, cache = decoder(tokens, positions, cache, table)
        return decoder.logits(hidden), cache

    def run(attention_impl: AttentionImpl) -> tuple[list[np.ndarray], list[int]]:
        decoder = nnx.merge(_decoder_with(model, attention_impl), model.state)
        cache = PagedKVCache.allocate(model.config, 5, 4, model.dtype)
        chunks = [(prompt[:8], list(range(8))), (prompt[8:] + [0] * 4, list(range(8, 12)) + [PADDING] * 4)]
        all_logits = []
        for tokens, positions in chunks:
            logits, cache = step(decoder, jnp.asarray([tokens]), jnp.asarray([positions]), cache)
            real_tokens = sum(p < PADDING for p in positions)
            all_logits.append(np.asarray(logits[0, :real_tokens]))
        greedy = [int(np.argmax(all_logits[-1][-1]))]
        for position in range(12, 14):
            logits, cache = step(decoder, jnp.asarray([[greedy[-1]]]), jnp.asarray([[position]]), cache)
            all_logits.append(np.asarray(logits[0]))
            greedy.append(int(np.argmax(logits[0, -1])))
        return all_logits, greedy

    pallas_logits, pallas_greedy = run("pallas_interpret")
    reference_logits, reference_greedy = run("reference")
    for ours, reference in zip(pallas_logits, reference_logits, strict=True):
        np.testing.assert_allclose(ours, reference, atol=1e-4, rtol=0)
    assert pallas_greedy == reference_greedy == golden["greedy_continuation"][: len(pallas_greedy)]
