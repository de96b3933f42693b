"""Padding buckets: step shapes and how a prompt is cut into chunks."""

from __future__ import annotations

import pytest

from jaxserve.engine.buckets import (
    ACCELERATOR_PREFILL_CHUNK_SIZES,
    CPU_PREFILL_CHUNK_SIZES,
    BucketConfig,
    prefill_chunk_sizes_for,
)


def _chunks(buckets: BucketConfig, remaining: int, budget: int | None = None) -> list[int]:
    """The chunk sizes a prompt of `remaining` tokens is fed in, each step with `budget` tokens."""
    out = []
    while remaining:
        out.append(buckets.chunk_for(remaining, budget))
        remaining -= out[-1]
    return out


@pytest.mark.parametrize(
    ("remaining", "chunks"),
    [
        (13, [13]),
        (32, [32]),
        (44, [32, 12]),  # two 32-token steps beat one padded to 128
        (109, [109]),  # one padded 128-token step beats four of 32
        (128, [128]),
        (141, [128, 13]),  # not one chunk padded to 512
        (300, [128, 128, 32, 12]),
        (600, [512, 32, 32, 24]),
    ],
)
def test_a_prompt_is_cut_into_chunks_with_little_padding(remaining: int, chunks: list[int]) -> None:
    buckets = BucketConfig(
        max_num_seqs=8, max_model_len=2048, prefill_chunk_sizes=(32, 128, 512), chunk_overhead_tokens=13
    )
    assert _chunks(buckets, remaining) == chunks
    for chunk in chunks:
        assert buckets.step_shape(1, chunk, chunk)[1] in buckets.chunk_sizes


def test_the_step_budget_caps_a_chunk() -> None:
    buckets = BucketConfig(
        max_num_seqs=8, max_model_len=2048, prefill_chunk_sizes=(32, 128, 512), chunk_overhead_tokens=13
    )
    assert buckets.chunk_for(141, budget=100) == 100
    assert _chunks(buckets, 141, budget=64) == [64, 32, 32, 13]  # the 77 left: as 32 + 32 + 13


def test_chunks_cost_only_their_padding_without_overhead() -> None:
    buckets = BucketConfig(max_num_seqs=8, max_model_len=2048, chunk_overhead_tokens=0)
    assert _chunks(buckets, 109) == [109]  # 128 padded tokens either way: the tie goes to fewer chunks
    assert _chunks(buckets, 141) == [128, 13]
    assert _chunks(buckets, 70) == [32, 32, 6]  # 96 padded tokens, not 128


def test_cpu_compiles_no_512_token_chunk() -> None:
    assert prefill_chunk_sizes_for("cpu") == CPU_PREFILL_CHUNK_SIZES
    assert 512 not in CPU_PREFILL_CHUNK_SIZES
    assert prefill_chunk_sizes_for("tpu") == ACCELERATOR_PREFILL_CHUNK_SIZES
    buckets = BucketConfig(max_num_seqs=8, max_model_len=2048, prefill_chunk_sizes=CPU_PREFILL_CHUNK_SIZES)
    assert {tokens for _, tokens, _ in buckets.all_step_shapes()} == {1, 16, 32, 128}
    assert _chunks(buckets, 600) == [128, 128, 128, 128, 88]  # 88 in one chunk: 148 against 2 x 32 + 24's 156
    assert _chunks(buckets, 141) == [128, 13]  # the 13 padded to 16


def test_prompt_chunks_of_one_size_share_steps_without_padding_rows() -> None:
    buckets = BucketConfig(max_num_seqs=8, max_model_len=2048, prefill_chunk_sizes=(32, 128))
    assert buckets.prefill_batch_sizes(32) == buckets.prefill_batch_sizes(128) == (1, 2, 4)
    assert [buckets.prefill_batches(n, 128) for n in range(1, 8)] == [
        [1],
        [2],
        [2, 1],
        [4],
        [4, 1],
        [4, 2],
        [4, 2, 1],
    ]
    assert buckets.prefill_batches(9, 32) == [4, 4, 1]
    assert buckets.step_shape(3, 109, 109) == (4, 128, 16)
    assert buckets.step_shape(2, 20, 300) == (2, 32, 32)
    prefill_shapes = {(b, t) for b, t, _ in buckets.all_step_shapes() if t > 1}
    assert prefill_shapes == {(b, t) for b in (1, 2, 4) for t in (32, 128)}


def test_prompt_chunk_rows_are_capped_by_the_option_the_slots_and_the_budget() -> None:
    one_at_a_time = BucketConfig(max_num_seqs=8, max_model_len=2048, max_prefill_rows=1)
    assert one_at_a_time.prefill_batch_sizes(128) == (1,)
    assert one_at_a_time.prefill_batches(3, 128) == [1, 1, 1]
    assert BucketConfig(max_num_seqs=2, max_model_len=2048).prefill_batch_sizes(128) == (1, 2)
    three = BucketConfig(max_num_seqs=8, max_model_len=2048, max_prefill_rows=3)
    assert three.prefill_batch_sizes(128) == (1, 2, 3)
    # Chunks padded to 512 hold 129 tokens or more: a 512-token budget fits three of them, and one
    # padded to 128 (over 32 tokens) fits four.
    accelerator = BucketConfig(max_num_seqs=8, max_model_len=2048, max_prefill_rows=8)
    assert accelerator.prefill_batch_sizes(512) == (1, 2, 3)
    assert accelerator.prefill_batch_sizes(128) == (1, 2, 4, 8)
    assert accelerator.prefill_batch_sizes(32) == (1, 2, 4, 8)
    with pytest.raises(ValueError):
        BucketConfig(max_num_seqs=8, max_model_len=2048, max_prefill_rows=0)


def test_a_warm_start_loads_what_a_few_short_conversations_need_first() -> None:
    buckets = BucketConfig(max_num_seqs=64, max_model_len=2048, prefill_chunk_sizes=CPU_PREFILL_CHUNK_SIZES)
    first = [shape for shape in buckets.all_step_shapes() if buckets.loaded_up_front(shape)]
    narrowest = buckets.page_counts[0]
    decode = [(rows, 1, narrowest) for rows in (1, 2, 4, 8)]  # not 16, 32, 64
    assert sorted(first) == sorted(decode + [(1, tokens, narrowest) for tokens in (16, 32, 128)])
