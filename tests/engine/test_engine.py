"""The engine on a tiny random-weight model: batching, queueing, abort, seeds and compile discipline."""

from __future__ import annotations

import asyncio

import pytest

from jaxserve.engine.async_engine import AsyncEngine
from jaxserve.engine.outputs import RequestOutput
from jaxserve.errors import InvalidRequest, ServerBusy
from jaxserve.sampling.params import SamplingParams
from tests.engine.conftest import (
    BACKEND_COMPILES,
    MAX_MODEL_LEN,
    MAX_NUM_SEQS,
    EngineFactory,
    collect,
    prompt_ids,
    run,
)


@pytest.fixture
def engine(make_engine: EngineFactory) -> AsyncEngine:
    return make_engine()


def test_concurrent_requests_match_running_alone(engine: AsyncEngine) -> None:
    """More requests than slots, different lengths: each gets exactly its solo greedy tokens."""
    cases = [
        (prompt_ids(n, i), SamplingParams(temperature=0.0, max_tokens=m, ignore_eos=True))
        for i, (n, m) in enumerate([(3, 5), (40, 12), (9, 30), (17, 7), (1, 20), (70, 9)])
    ]
    alone = [run(collect(engine, p, s, f"alone-{i}")).token_ids for i, (p, s) in enumerate(cases)]

    async def together() -> list[RequestOutput]:
        return await asyncio.gather(
            *(collect(engine, p, s, f"together-{i}") for i, (p, s) in enumerate(cases))
        )

    outputs = run(together())
    assert [o.token_ids for o in outputs] == alone
    assert [len(o.token_ids) for o in outputs] == [5, 12, 30, 7, 20, 9]
    assert all(o.finish_reason == "length" for o in outputs)


def test_seeded_sampling_is_reproducible_in_any_batch(engine: AsyncEngine) -> None:
    seeded = SamplingParams(temperature=1.0, seed=1234, max_tokens=16, ignore_eos=True)
    alone = run(collect(engine, prompt_ids(10, 1), seeded, "seeded-alone")).token_ids

    async def crowded() -> list[RequestOutput]:
        noisy = SamplingParams(temperature=0.9, max_tokens=16, ignore_eos=True)
        return await asyncio.gather(
            collect(engine, prompt_ids(20, 2), noisy, "noise-1"),
            collect(engine, prompt_ids(10, 1), seeded, "seeded-crowd"),
            collect(engine, prompt_ids(5, 3), noisy, "noise-2"),
        )

    assert run(crowded())[1].token_ids == alone


def test_abort_frees_the_slot(engine: AsyncEngine) -> None:
    async def start_and_leave() -> None:
        stream = engine.generate("leaver", prompt_ids(8, 4), SamplingParams(max_tokens=100, ignore_eos=True))
        first = await stream.__anext__()
        assert not first.finished
        await stream.aclose()
        for _ in range(200):
            if engine.core.num_free_slots == MAX_NUM_SEQS and engine.core.num_waiting == 0:
                return
            await asyncio.sleep(0.01)
        raise AssertionError("aborted request still holds its slot")

    run(start_and_leave())
    # The engine still serves normally afterwards.
    out = run(collect(engine, prompt_ids(4, 5), SamplingParams(temperature=0.0, max_tokens=3), "after"))
    assert len(out.token_ids) <= 3


def test_stop_token_id_ends_with_its_reason(engine: AsyncEngine) -> None:
    prompt = prompt_ids(6, 6)
    greedy = SamplingParams(temperature=0.0, max_tokens=10, ignore_eos=True)
    free_run = run(collect(engine, prompt, greedy, "free")).token_ids
    stopper = free_run[3]
    first_hit = free_run.index(stopper)
    params = SamplingParams(temperature=0.0, max_tokens=10, ignore_eos=True, stop_token_ids=(stopper,))
    out = run(collect(engine, prompt, params, "stopped"))
    assert out.finish_reason == "stop" and out.stop_reason == stopper
    assert out.token_ids == free_run[: first_hit + 1]


def test_prompt_longer_than_context_is_refused(engine: AsyncEngine) -> None:
    async def too_long() -> None:
        async for _ in engine.generate("long", prompt_ids(MAX_MODEL_LEN, 7), SamplingParams()):
            pass

    with pytest.raises(InvalidRequest, match="maximum context length"):
        run(too_long())


def test_max_tokens_default_fills_the_context(engine: AsyncEngine) -> None:
    out = run(collect(engine, prompt_ids(100, 8), SamplingParams(temperature=0.0, ignore_eos=True), "fill"))
    assert len(out.token_ids) == MAX_MODEL_LEN - 100 and out.finish_reason == "length"


def test_nothing_compiles_after_warm_up(engine: AsyncEngine) -> None:
    """A mixed load over every bucket after warm-up triggers no XLA compilation at all."""
    compiles_before = BACKEND_COMPILES.count
    assert compiles_before >= engine.runner.compile_count > 0  # the listener saw warm-up compile
    runner_compiles = engine.runner.compile_count

    async def mixed() -> None:
        lengths = [1, 7, 8, 9, 31, 33, 60, 90, 120]
        await asyncio.gather(
            *(
                collect(
                    engine,
                    prompt_ids(n, n),
                    SamplingParams(
                        temperature=0.5 * (n % 3), top_p=0.9, max_tokens=MAX_MODEL_LEN - n, ignore_eos=True
                    ),
                    f"mix-{n}",
                )
                for n in lengths
            )
        )

    run(mixed())
    assert engine.runner.compile_count == runner_compiles
    assert BACKEND_COMPILES.count == compiles_before


def test_requests_beyond_the_queue_limit_get_server_busy(engine: AsyncEngine) -> None:
    """With room for two requests in flight, a third is refused at once; capacity returns afterwards."""
    saved = engine.max_in_flight
    engine.max_in_flight = 2
    try:

        async def crowd() -> list[object]:
            params = SamplingParams(temperature=0.0, max_tokens=20, ignore_eos=True)
            return await asyncio.gather(
                *(collect(engine, prompt_ids(5, i), params, f"crowd-{i}") for i in range(3)),
                return_exceptions=True,
            )

        results = run(crowd())
        busy = [r for r in results if isinstance(r, ServerBusy)]
        assert len(busy) == 1 and busy[0].status == 503
        assert sum(isinstance(r, RequestOutput) for r in results) == 2
        assert engine.in_flight == 0
    finally:
        engine.max_in_flight = saved


def test_prompt_ids_outside_the_model_vocabulary_are_refused(engine: AsyncEngine) -> None:
    vocab = engine.runner.vocab_size
    with pytest.raises(InvalidRequest, match=f"token id {vocab}"):
        run(collect(engine, [5, vocab], SamplingParams(max_tokens=2), "outside"))
    assert len(run(collect(engine, [5, vocab - 1], SamplingParams(max_tokens=2), "inside")).token_ids) <= 2
