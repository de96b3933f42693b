"""Decode steps dispatched before the previous step's tokens are read (EngineCore._chain) generate exactly
what one step at a time generates: tokens, text, logprobs, finish reasons, and every page given back."""

from __future__ import annotations

import asyncio
from dataclasses import replace

from jaxserve.engine.async_engine import AsyncEngine
from jaxserve.engine.outputs import RequestOutput
from jaxserve.sampling.params import SamplingParams
from tests.engine.conftest import EngineFactory, collect, pool_back_to_full, prompt_ids, run

GREEDY = SamplingParams(temperature=0.0, max_tokens=24, ignore_eos=True)


def outcome(output: RequestOutput) -> tuple[object, ...]:
    return (output.token_ids, output.text, output.finish_reason, output.stop_reason, output.logprobs)


def generate_together(
    engine: AsyncEngine, requests: list[tuple[list[int], SamplingParams]]
) -> list[RequestOutput]:
    async def together() -> list[RequestOutput]:
        return list(
            await asyncio.gather(*(collect(engine, p, s, f"r{i}") for i, (p, s) in enumerate(requests)))
        )

    return run(together())


def test_overlapped_steps_generate_what_one_step_at_a_time_does(make_engine: EngineFactory) -> None:
    one_at_a_time = make_engine(overlap_decode_steps=False)
    probe = run(collect(one_at_a_time, prompt_ids(9, 1), GREEDY, "probe")).token_ids
    stop_token = next(t for i, t in enumerate(probe) if i >= 5 and t not in probe[:i])
    requests = [
        (prompt_ids(9, 1), GREEDY),
        # Ends on a stop token mid-run: a step already chained behind it is discarded.
        (prompt_ids(9, 1), replace(GREEDY, stop_token_ids=(stop_token,))),
        # Seeded sampling under all three penalties: the step fed from the device must see the output
        # counts (and the PRNG step) its predecessor left.
        (
            prompt_ids(12, 2),
            SamplingParams(
                temperature=1.0,
                seed=7,
                max_tokens=20,
                ignore_eos=True,
                repetition_penalty=1.3,
                frequency_penalty=0.5,
                presence_penalty=0.4,
                logprobs=3,
            ),
        ),
        # min_tokens bans the end tokens while the output is short, counting a token not yet read.
        (
            prompt_ids(7, 3),
            SamplingParams(
                temperature=1.0, seed=3, max_tokens=16, min_tokens=10, stop_token_ids=(stop_token,)
            ),
        ),
        (prompt_ids(20, 4), replace(GREEDY, max_tokens=7)),
    ]
    # Every reference first: the engines share the tiny runner's KV cache, and an engine's prefix cache
    # knows only its own writes.
    expected = [outcome(o) for o in generate_together(one_at_a_time, requests)]
    # Alone, a request decodes as a batch of one: every step after its first can be chained.
    expected_alone = [
        outcome(run(collect(one_at_a_time, p, s, f"alone-{i}"))) for i, (p, s) in enumerate(requests)
    ]
    assert one_at_a_time.core.num_chained_steps == 0
    assert expected[1][2] == "stop" and expected[1][0] == tuple(probe[: probe.index(stop_token) + 1])
    assert len(expected[3][0]) >= 10

    overlapped = make_engine()
    assert [outcome(o) for o in generate_together(overlapped, requests)] == expected
    alone = [outcome(run(collect(overlapped, p, s, f"alone-{i}"))) for i, (p, s) in enumerate(requests)]
    assert alone == expected_alone
    assert overlapped.core.num_chained_steps > 0
    assert run(pool_back_to_full(overlapped))


def test_a_request_aborted_mid_chain_frees_its_pages_and_the_others_run_on(
    make_engine: EngineFactory,
) -> None:
    engine = make_engine()
    others = [(prompt_ids(10, 10 + i), GREEDY) for i in range(2)]
    alone = [outcome(o) for o in generate_together(make_engine(overlap_decode_steps=False), others)]

    async def abort_one() -> list[RequestOutput]:
        async def cut_short() -> int:
            received = 0
            stream = engine.generate("cut", prompt_ids(10, 30), replace(GREEDY, max_tokens=60))
            async for output in stream:
                received += len(output.delta_token_ids)
                if received >= 5:
                    break
            await stream.aclose()  # type: ignore[attr-defined]
            return received

        results = await asyncio.gather(
            cut_short(), *(collect(engine, p, s, f"o{i}") for i, (p, s) in enumerate(others))
        )
        assert results[0] >= 5
        return list(results[1:])  # type: ignore[arg-type]

    assert [outcome(o) for o in run(abort_one())] == alone
    assert run(pool_back_to_full(engine))
    assert engine.core.num_chained_steps > 0
