"""The paged KV cache through the engine: prefix caching, salts, preemption, abort, priorities."""

from __future__ import annotations

import asyncio

import pytest

from jaxserve.engine.outputs import RequestOutput
from jaxserve.errors import InvalidRequest
from jaxserve.sampling.params import SamplingParams
from tests.engine.conftest import (
    MAX_NUM_SEQS,
    PAGE_SIZE,
    EngineFactory,
    collect,
    pool_back_to_full,
    prompt_ids,
    run,
)

GREEDY = SamplingParams(temperature=0.0, max_tokens=12, ignore_eos=True)


def test_prefix_cache_hit_gives_identical_output(make_engine: EngineFactory) -> None:
    engine = make_engine()
    prompt = prompt_ids(50, 101)
    first = run(collect(engine, prompt, GREEDY, "first"))
    second = run(collect(engine, prompt, GREEDY, "second"))
    assert first.num_cached_tokens == 0
    assert second.num_cached_tokens == 3 * PAGE_SIZE  # the full blocks of 50 tokens
    assert second.token_ids == first.token_ids


def test_a_whole_prompt_hit_still_computes_its_last_block(make_engine: EngineFactory) -> None:
    engine = make_engine()
    prompt = prompt_ids(2 * PAGE_SIZE, 102)
    first = run(collect(engine, prompt, GREEDY, "first"))
    again = run(collect(engine, prompt, GREEDY, "again"))
    assert again.num_cached_tokens == PAGE_SIZE
    assert again.token_ids == first.token_ids


def test_cache_salt_isolates_tenants(make_engine: EngineFactory) -> None:
    engine = make_engine()
    prompt = prompt_ids(40, 103)
    run(collect(engine, prompt, GREEDY, "a1", cache_salt="tenant-a"))
    a2 = run(collect(engine, prompt, GREEDY, "a2", cache_salt="tenant-a"))
    b1 = run(collect(engine, prompt, GREEDY, "b1", cache_salt="tenant-b"))
    unsalted = run(collect(engine, prompt, GREEDY, "plain"))
    assert a2.num_cached_tokens == 2 * PAGE_SIZE
    assert b1.num_cached_tokens == 0 and unsalted.num_cached_tokens == 0
    assert a2.token_ids == b1.token_ids == unsalted.token_ids


def test_prefix_caching_can_be_disabled(make_engine: EngineFactory) -> None:
    engine = make_engine(enable_prefix_caching=False)
    prompt = prompt_ids(40, 104)
    run(collect(engine, prompt, GREEDY, "one"))
    assert run(collect(engine, prompt, GREEDY, "two")).num_cached_tokens == 0


def test_concurrent_identical_prompts_compute_the_prefix_once(make_engine: EngineFactory) -> None:
    """n requests with one prompt arriving together: the later ones wait for the first's blocks."""
    engine = make_engine()
    prompt = prompt_ids(40, 105)

    async def together() -> list[RequestOutput]:
        return await asyncio.gather(*(collect(engine, prompt, GREEDY, f"twin-{i}") for i in range(3)))

    outputs = run(together())
    assert sorted(o.num_cached_tokens for o in outputs) == [0, 2 * PAGE_SIZE, 2 * PAGE_SIZE]
    assert len({o.token_ids for o in outputs}) == 1


def test_preemption_under_a_tiny_pool_completes_every_request_correctly(make_engine: EngineFactory) -> None:
    """Four sequences needing 5 pages each share 8 pages: they are preempted and recomputed, and still
    produce exactly their solo tokens (greedy and seeded)."""
    cases = [
        (prompt_ids(20, 110 + i), SamplingParams(temperature=0.0, max_tokens=60, ignore_eos=True))
        for i in range(3)
    ]
    cases.append(
        (prompt_ids(20, 114), SamplingParams(temperature=1.0, seed=7, max_tokens=60, ignore_eos=True))
    )
    roomy = make_engine(enable_prefix_caching=False)
    alone = [run(collect(roomy, p, s, f"alone-{i}")).token_ids for i, (p, s) in enumerate(cases)]

    tight = make_engine(num_pages=8, enable_prefix_caching=False)

    async def together() -> list[RequestOutput]:
        return await asyncio.gather(*(collect(tight, p, s, f"tight-{i}") for i, (p, s) in enumerate(cases)))

    outputs = run(together())
    assert [o.token_ids for o in outputs] == alone
    assert tight.core.scheduler.num_preemptions > 0
    assert run(pool_back_to_full(tight))


def test_abort_returns_every_page(make_engine: EngineFactory) -> None:
    engine = make_engine()

    async def start_and_leave() -> bool:
        streams = [
            engine.generate(
                f"leaver-{i}", prompt_ids(30 + i, 120 + i), SamplingParams(max_tokens=90, ignore_eos=True)
            )
            for i in range(3)
        ]
        for stream in streams:
            assert not (await stream.__anext__()).finished
        assert engine.core.scheduler.pool.num_free < engine.core.scheduler.pool.num_pages
        for stream in streams:
            await stream.aclose()
        return await pool_back_to_full(engine)

    assert run(start_and_leave())


def test_priority_policy_runs_urgent_requests_first(make_engine: EngineFactory) -> None:
    """With every slot busy with low-priority work, an urgent request preempts one and finishes first;
    the preempted one still completes with its solo tokens."""
    engine = make_engine(scheduling_policy="priority")
    background = [
        (prompt_ids(10, 130 + i), SamplingParams(temperature=0.0, max_tokens=100, ignore_eos=True))
        for i in range(MAX_NUM_SEQS)
    ]
    alone = [run(collect(engine, p, s, f"solo-{i}")).token_ids for i, (p, s) in enumerate(background)]
    finished_order: list[str] = []

    async def go(prompt: list[int], params: SamplingParams, rid: str, priority: int) -> RequestOutput:
        out = await collect(engine, prompt, params, rid, priority=priority)
        finished_order.append(rid)
        return out

    async def scenario() -> list[RequestOutput]:
        tasks = [asyncio.ensure_future(go(p, s, f"low-{i}", 10)) for i, (p, s) in enumerate(background)]
        while engine.core.num_running < MAX_NUM_SEQS:
            await asyncio.sleep(0.01)
        urgent = asyncio.ensure_future(go(prompt_ids(10, 140), GREEDY, "urgent", -5))
        return await asyncio.gather(*tasks, urgent)

    outputs = run(scenario())
    assert finished_order[0] == "urgent"
    assert [o.token_ids for o in outputs[:-1]] == alone
    assert engine.core.scheduler.num_preemptions >= 1


def test_fcfs_refuses_a_non_zero_priority(make_engine: EngineFactory) -> None:
    engine = make_engine()
    with pytest.raises(InvalidRequest, match="scheduling-policy priority"):
        run(collect(engine, prompt_ids(5, 1), GREEDY, "prio", priority=1))
