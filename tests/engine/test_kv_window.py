"""Sliding-window page freeing, host-side only: the boundary arithmetic against the attention mask, and
the scheduler's block tables, pool and prefix-cache hits under a window."""

from __future__ import annotations

import dataclasses
import itertools
import random

import pytest

from jaxserve.engine.block_pool import FREED_PAGE, BlockPool, chain_block_hashes
from jaxserve.engine.buckets import BucketConfig, cdiv
from jaxserve.engine.kv_window import (
    first_needed_block,
    max_pages_held,
    uniform_window,
    windowed_cache_hit,
)
from jaxserve.engine.scheduler import Scheduler
from jaxserve.engine.sequence import Sequence, SequenceStatus
from jaxserve.modeling.config import ModelConfig
from tests.engine.conftest import finish_step, host_sequence

PAGE = 4
WINDOW = 8


def _visible(query: int, key: int, window: int) -> bool:
    """The attention mask of jaxserve.modeling.attention.paged_attention, spelled out."""
    return query - window < key <= query


def _scheduler(num_pages: int, window: int | None = WINDOW, *, max_model_len: int = 64) -> Scheduler:
    buckets = BucketConfig(
        max_num_seqs=2,
        max_model_len=max_model_len,
        page_size=PAGE,
        prefill_chunk_sizes=(8,),
        max_num_batched_tokens=8,
        min_kv_len=8,
    )
    return Scheduler(buckets, BlockPool(num_pages), sliding_window=window)


def _step(scheduler: Scheduler) -> list[tuple[Sequence, int, int]]:
    """Plan and 'run' one step (no model): returns (sequence, first fed position, tokens fed) per row,
    checked against the block table the row runs with."""
    plan = scheduler.schedule()
    rows = [(c.seq, c.start, c.num_tokens) for c in plan.prefills] + [
        (s, s.num_computed, 1) for s in plan.decodes
    ]
    for seq, start, count in rows:
        _check_table(seq, start, count)
    finish_step(scheduler, plan)
    return rows


def _check_table(seq: Sequence, start: int, count: int) -> None:
    """Every page a query of this step can see is held; every freed entry is invisible to all of them."""
    table = seq.block_table
    assert len(table) == cdiv(start + count, PAGE)
    for block, page in enumerate(table):
        keys = range(block * PAGE, (block + 1) * PAGE)
        seen = any(_visible(q, k, WINDOW) for q in range(start, start + count) for k in keys)
        assert (page != FREED_PAGE) == seen, (block, start, count, table)


def _held(seq: Sequence) -> int:
    return sum(1 for page in seq.block_table if page != FREED_PAGE)


def test_first_needed_block_is_the_oldest_block_any_later_query_can_see() -> None:
    for window, page, position in itertools.product((1, 3, 8, 9, 16), (1, 4, 16), range(70)):
        later_queries = range(position, position + window + 2 * page)
        oldest_seen = min(k for q in later_queries for k in range(q + 1) if _visible(q, k, window))
        assert first_needed_block(position, window, page) == oldest_seen // page


def test_max_pages_held_is_the_tight_bound_on_pages_a_step_touches() -> None:
    for window, page, fed in itertools.product((2, 8, 13), (4, 16), (1, 5, 8, 32)):
        touched = [
            cdiv(start + fed, page) - first_needed_block(start, window, page)
            for start in range(window + 2 * page)
        ]
        assert max(touched) == max_pages_held(window, page, fed)


def test_windowed_cache_hit_is_the_longest_prefix_whose_window_is_cached() -> None:
    rng = random.Random(0)
    for _ in range(500):
        window, n = rng.choice((2, 5, 8, 9)), rng.randrange(0, 12)
        cached = [rng.randrange(100) if rng.random() < 0.7 else None for _ in range(n)]

        def usable(k: int, window: int = window, cached: list[int | None] = cached) -> bool:
            first = first_needed_block(k * PAGE, window, PAGE)
            return all(page is not None for page in cached[first:k])

        assert windowed_cache_hit(cached, window, PAGE) == max(k for k in range(n + 1) if usable(k))


@dataclasses.dataclass(frozen=True)
class _LayerTypedConfig(ModelConfig):
    """ModelConfig with per-layer attention types in transformers' spelling, as Gemma 3 support adds."""

    layer_types: tuple[str, ...] = ()


def test_uniform_window_frees_only_when_every_layer_slides() -> None:
    shape = ("mistral", 256, 64, 128, 2, 4, 2, 16, 512)
    assert uniform_window(ModelConfig(*shape)) is None
    assert uniform_window(ModelConfig(*shape, sliding_window=8)) == 8
    every = ("sliding_attention", "sliding_attention")
    assert uniform_window(_LayerTypedConfig(*shape, sliding_window=8, layer_types=every)) == 8
    mixed = ("sliding_attention", "full_attention")  # Gemma 3: the full layers read the whole history
    assert uniform_window(_LayerTypedConfig(*shape, sliding_window=8, layer_types=mixed)) is None


def test_a_decoding_sequence_holds_only_its_window_and_gives_the_rest_back() -> None:
    scheduler = _scheduler(16)
    seq = host_sequence(list(range(10, 30)))  # 20 tokens: three chunks of 8, 8, 4
    scheduler.add(seq)
    while seq.num_tokens < 60:
        for row_seq, _start, fed in _step(scheduler):
            assert _held(row_seq) <= max_pages_held(WINDOW, PAGE, fed)
        # Between steps: exactly the pages of positions [num_computed - W + 1, num_computed) are held.
        held = cdiv(seq.num_computed, PAGE) - first_needed_block(seq.num_computed, WINDOW, PAGE)
        assert _held(seq) == held == scheduler.pool.num_pages - scheduler.pool.num_free
    assert max(seq.block_table) >= 0 and len(seq.block_table) == 15  # 15 pages' worth through 3 held
    scheduler.finish(seq)
    assert scheduler.pool.num_free == 16


def test_without_a_window_every_page_stays_until_the_end() -> None:
    scheduler = _scheduler(16, window=None)
    seq = host_sequence(list(range(10, 30)))
    scheduler.add(seq)
    for _ in range(30):
        finish_step(scheduler, scheduler.schedule())
    assert FREED_PAGE not in seq.block_table and _held(seq) == cdiv(seq.num_tokens - 1, PAGE)


def test_a_window_lets_a_pool_smaller_than_one_full_sequence_serve() -> None:
    with pytest.raises(ValueError, match="needs 16"):
        _scheduler(8, window=None)
    scheduler = _scheduler(max_pages_held(WINDOW, PAGE, 8))  # 5 pages for a 64-token context
    seq = host_sequence(list(range(10, 40)))
    scheduler.add(seq)
    while seq.num_tokens < 64:
        _step(scheduler)
    assert seq.num_preemptions == 0


def test_two_windowed_sequences_fit_where_full_ones_preempt() -> None:
    def preemptions(window: int | None) -> int:
        scheduler = _scheduler(16, window)
        seqs = [host_sequence(list(range(10, 30))), host_sequence(list(range(40, 60)))]
        for seq in seqs:
            scheduler.add(seq)
        for _ in range(500):  # generous: recomputing preempted sequences takes extra steps
            if not scheduler.has_work():
                break
            if window:
                _step(scheduler)
            else:
                finish_step(scheduler, scheduler.schedule())
            for seq in seqs:
                if seq.num_tokens >= 60 and seq.status is not SequenceStatus.FINISHED:
                    scheduler.finish(seq)
        assert all(seq.status is SequenceStatus.FINISHED for seq in seqs)
        return scheduler.num_preemptions

    assert preemptions(None) > 0
    assert preemptions(WINDOW) == 0


def test_a_prefix_hit_needs_only_the_window_before_the_first_computed_token() -> None:
    scheduler = _scheduler(16)
    prompt = list(range(100, 130))  # 30 tokens: 7 full blocks before the last token
    first = host_sequence(prompt)
    scheduler.add(first)
    while first.status is not SequenceStatus.DECODING:
        _step(scheduler)
    scheduler.finish(first)
    hashes = chain_block_hashes(prompt, PAGE, None, [])
    pool = scheduler.pool
    while pool.cached_page(hashes[0]) is not None:  # evict the oldest freed blocks: the head of the prompt
        pool.allocate(1)
    evicted = [index for index, block_hash in enumerate(hashes) if pool.cached_page(block_hash) is None]
    assert evicted[:1] == [0] and 6 not in evicted and 5 not in evicted
    again = host_sequence(prompt)
    scheduler.add(again)
    plan = scheduler.schedule()
    (chunk,) = plan.prefills
    assert chunk.start == 7 * PAGE  # a full-prefix lookup would have found nothing (block 0 is gone)
    assert again.num_cached_tokens == 7 * PAGE
    assert again.block_table[:5] == [FREED_PAGE] * 5
    assert again.block_table[5:7] == [pool.cached_page(hashes[5]), pool.cached_page(hashes[6])]
    _check_table(again, chunk.start, chunk.num_tokens)
