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
    buckets = BucketConfig(max_num_seqs=8, max_model_len=2048, prefill_chunk_sizes=(32, 128, 512))
    assert _chunks(buckets, remaining) == chunks
    for chunk in chunks:
        assert buckets.step_shape(1, chunk, chunk)[1] in buckets.chunk_sizes


def test_the_step_budget_caps_a_chunk() -> None:
    buckets = BucketConfig(max_num_seqs=8, max_model_len=2048, prefill_chunk_sizes=(32, 128, 512))
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
    assert {tokens for _, tokens, _ in buckets.all_step_shapes()} == {1, 32, 128}
    assert _chunks(buckets, 600) == [128, 128, 128, 128, 32, 32, 24]
