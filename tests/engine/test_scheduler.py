"""The scheduler's plans, host-side only: token budget, chunking, prefix sharing, preemption order."""

from __future__ import annotations

from jaxserve.engine.block_pool import BlockPool
from jaxserve.engine.buckets import BucketConfig
from jaxserve.engine.scheduler import Scheduler
from jaxserve.engine.sequence import SequenceStatus
from tests.engine.conftest import finish_step, host_sequence

PAGE = 4


def _scheduler(num_pages: int, *, budget: int = 16, policy: str = "fcfs", max_num_seqs: int = 4) -> Scheduler:
    buckets = BucketConfig(
        max_num_seqs=max_num_seqs,
        max_model_len=32,
        page_size=PAGE,
        prefill_chunk_sizes=(8, 16),
        max_num_batched_tokens=budget,
        min_kv_len=8,
    )
    return Scheduler(buckets, BlockPool(num_pages), policy)


def test_decodes_come_first_and_prompt_chunks_fill_the_budget() -> None:
    scheduler = _scheduler(32, budget=16)
    short = [host_sequence([5, 6, 7]) for _ in range(3)]
    for seq in short:
        scheduler.add(seq)
    finish_step(scheduler, scheduler.schedule())  # the three short prompts fit one step's budget
    assert all(seq.status is SequenceStatus.DECODING for seq in short)
    long = host_sequence(list(range(40, 70)))
    scheduler.add(long)
    plan = scheduler.schedule()
    assert plan.decodes == short
    assert [(c.seq, c.start, c.num_tokens) for c in plan.prefills] == [(long, 0, 13)]  # 16 - 3 decodes


def test_a_request_waits_for_the_prefix_another_is_computing() -> None:
    scheduler = _scheduler(32)
    prompt = list(range(100, 110))  # two full blocks and a partial one
    first, twin = host_sequence(prompt), host_sequence(prompt)
    scheduler.add(first)
    scheduler.add(twin)
    plan = scheduler.schedule()
    assert [c.seq for c in plan.prefills] == [first]  # the twin is held back, not given the same work
    for chunk in plan.prefills:
        scheduler.computed(chunk.seq, chunk.num_tokens)
        chunk.seq.status = SequenceStatus.DECODING
    plan = scheduler.schedule()
    assert plan.decodes == [first]
    (chunk,) = plan.prefills
    assert chunk.seq is twin and chunk.start == 2 * PAGE
    assert twin.num_cached_tokens == 2 * PAGE
    assert twin.block_table[:2] == first.block_table[:2]  # the same pages, shared


def test_out_of_pages_preempts_the_newest_and_it_resumes_with_its_tokens() -> None:
    scheduler = _scheduler(8, budget=16)  # 8 pages of 4 = one 32-token sequence
    old, new = host_sequence(list(range(10, 17))), host_sequence(list(range(20, 27)))
    scheduler.add(old)
    scheduler.add(new)
    preempted = []
    for _ in range(20):
        plan = scheduler.schedule()
        preempted += plan.preempted
        finish_step(scheduler, plan)
        if old.num_tokens >= 24:
            scheduler.finish(old)
            break
    assert preempted and all(seq is new for seq in preempted)
    assert new.status is SequenceStatus.WAITING and new.num_computed == 0 and new.block_table == []
    plan = scheduler.schedule()  # pages are back: the preempted sequence recomputes prompt + output
    (chunk,) = plan.prefills
    # It resumes after whichever of its own full blocks are still in the prefix cache.
    assert chunk.seq is new and chunk.start % PAGE == 0 and chunk.start < new.prefill_target
    assert new.prefill_target == new.num_tokens - 1 and len(new.output_ids) > 1


def test_priority_policy_preempts_lower_priority_work_for_an_urgent_arrival() -> None:
    scheduler = _scheduler(32, policy="priority", max_num_seqs=2)
    low = [host_sequence([1, 2, 3], priority=5), host_sequence([4, 5, 6], priority=9)]
    for seq in low:
        scheduler.add(seq)
    finish_step(scheduler, scheduler.schedule())
    urgent = host_sequence([7, 8, 9], priority=0)
    scheduler.add(urgent)
    plan = scheduler.schedule()
    assert plan.preempted == [low[1]]  # the lowest priority (highest value) goes
    assert urgent in plan.admitted and low[0] in plan.decodes


def test_fcfs_never_preempts_for_a_newcomer() -> None:
    scheduler = _scheduler(32, max_num_seqs=1)
    first, second = host_sequence([1, 2, 3]), host_sequence([4, 5, 6])
    scheduler.add(first)
    finish_step(scheduler, scheduler.schedule())
    scheduler.add(second)
    plan = scheduler.schedule()
    assert plan.preempted == [] and plan.decodes == [first] and second.status is SequenceStatus.WAITING


def test_finish_returns_slot_and_pages() -> None:
    scheduler = _scheduler(16)
    seq = host_sequence(list(range(12)))
    scheduler.add(seq)
    finish_step(scheduler, scheduler.schedule())
    assert scheduler.pool.num_free < 16 and scheduler.num_free_slots == 3
    scheduler.finish(seq)
    assert scheduler.pool.num_free == 16 and scheduler.num_free_slots == 4 and not scheduler.has_work()


def test_reserving_ahead_takes_one_more_position_for_every_sequence_or_for_none() -> None:
    scheduler = _scheduler(8)
    seqs = [host_sequence([5, 6, 7]) for _ in range(2)]
    for seq in seqs:
        scheduler.add(seq)
    finish_step(scheduler, scheduler.schedule())  # 3 prompt tokens + 1 sampled each: one page each
    assert [len(seq.block_table) for seq in seqs] == [1, 1] and scheduler.pool.num_free == 6
    # A step dispatched ahead feeds position 4 (the token being sampled now): a second page each.
    assert scheduler.reserve_ahead(seqs)
    assert [len(seq.block_table) for seq in seqs] == [2, 2] and scheduler.pool.num_free == 4
    for seq in seqs:
        seq.output_ids += [1] * 12  # position 16 next: three more pages each; the first alone would fit
    assert not scheduler.reserve_ahead(seqs)
    assert [len(seq.block_table) for seq in seqs] == [2, 2] and scheduler.pool.num_free == 4
