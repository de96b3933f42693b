"""Faults in engine steps, injected through EngineCore.fault_injector: a failed runner call fails only its
sequences and the engine serves on; a fault that loses the KV cache stops the engine."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import jax
import pytest

from jaxserve.bench.command import free_port
from jaxserve.engine.core import RunnerCall
from jaxserve.engine.outputs import RequestOutput
from jaxserve.engine.runner import ModelRunner
from jaxserve.engine.sequence import Sequence
from jaxserve.errors import EngineFault
from jaxserve.http.app import build_app
from jaxserve.modeling.kv_cache import PagedKVCache
from jaxserve.sampling.params import SamplingParams
from jaxserve.server import ServerOptions, _serve
from tests.engine.conftest import EngineFactory, collect, pool_back_to_full, prompt_ids, run

LONG = SamplingParams(temperature=0.0, max_tokens=40, ignore_eos=True)


class InjectedFault(RuntimeError):
    pass


def test_a_faulting_decode_fails_its_batch_and_the_engine_serves_on(make_engine: EngineFactory) -> None:
    prompts = [prompt_ids(10, 200 + i) for i in range(3)]
    fresh = make_engine()
    alone = [run(collect(fresh, p, LONG, f"alone-{i}")).token_ids for i, p in enumerate(prompts)]

    engine = make_engine()
    faulted: list[int] = []

    def fail_one_full_decode(kind: RunnerCall, seqs: list[Sequence]) -> None:
        if kind == "decode" and len(seqs) == 3 and not faulted:
            faulted.append(len(seqs))
            raise InjectedFault("injected")

    engine.core.fault_injector = fail_one_full_decode

    async def together() -> list[RequestOutput | BaseException]:
        return await asyncio.gather(
            *(collect(engine, p, LONG, f"victim-{i}") for i, p in enumerate(prompts)), return_exceptions=True
        )

    results = run(together())
    assert faulted == [3]
    assert all(isinstance(r, EngineFault) for r in results)
    assert run(pool_back_to_full(engine))
    assert engine.is_healthy()
    after = [run(collect(engine, p, LONG, f"after-{i}")).token_ids for i, p in enumerate(prompts)]
    assert after == alone


def test_a_faulting_prefill_chunk_fails_only_its_request(make_engine: EngineFactory) -> None:
    decoder_prompt, long_prompt = prompt_ids(10, 210), prompt_ids(90, 211)
    alone = run(collect(make_engine(), decoder_prompt, LONG, "alone")).token_ids

    engine = make_engine()
    chunks: list[int] = []

    def fail_second_chunk(kind: RunnerCall, seqs: list[Sequence]) -> None:
        if kind == "prefill" and seqs[0].request_id.startswith("long-"):
            chunks.append(len(chunks))
            if len(chunks) == 2:
                raise InjectedFault("injected")

    engine.core.fault_injector = fail_second_chunk

    async def scenario() -> tuple[RequestOutput, BaseException | RequestOutput]:
        decoding = engine.generate("decoder", decoder_prompt, LONG)
        first = await decoding.__anext__()  # its prompt is in the cache: it decodes from now on
        rest = asyncio.ensure_future(_last(decoding, first))
        short = SamplingParams(temperature=0.0, max_tokens=8, ignore_eos=True)
        failing = await asyncio.gather(collect(engine, long_prompt, short, "long"), return_exceptions=True)
        return await rest, failing[0]

    decoded, failed = run(scenario())
    assert len(chunks) == 2
    assert isinstance(failed, EngineFault)
    assert decoded.finished and decoded.token_ids == alone
    assert run(pool_back_to_full(engine))


async def _last(outputs: AsyncIterator[RequestOutput], first: RequestOutput) -> RequestOutput:
    last = first
    async for output in outputs:
        last = output
    return last


@pytest.fixture
def restores_cache(tiny_runner: ModelRunner) -> Iterator[ModelRunner]:
    """The shared runner, with a fresh KV cache put back after a test that destroys it."""
    yield tiny_runner
    model = tiny_runner.model
    tiny_runner.cache = PagedKVCache.allocate(
        model.config, tiny_runner.num_pages, tiny_runner.buckets.page_size, model.dtype
    )


def test_a_fault_that_loses_the_kv_cache_stops_the_engine(
    make_engine: EngineFactory, restores_cache: ModelRunner
) -> None:
    """A device fault after the cache was donated leaves its buffers deleted; serving on would read freed
    memory, so the engine fails every request and reports itself unhealthy."""
    engine = make_engine()

    def lose_the_cache(kind: RunnerCall, seqs: list[Sequence]) -> None:
        if kind == "decode":
            for leaf in jax.tree.leaves(restores_cache.cache):
                leaf.delete()
            raise InjectedFault("device fault after donation")

    engine.core.fault_injector = lose_the_cache

    async def two() -> list[RequestOutput | BaseException]:
        return await asyncio.gather(
            *(collect(engine, prompt_ids(10, 220 + i), LONG, f"doomed-{i}") for i in range(2)),
            return_exceptions=True,
        )

    results = run(two())
    assert all(isinstance(r, EngineFault) for r in results)
    engine._thread.join(5)
    assert not engine.is_healthy()
    with pytest.raises(EngineFault) as refused:
        run(collect(engine, prompt_ids(5, 230), LONG, "late"))
    assert refused.value.code == "engine_dead"


def test_the_server_exits_non_zero_once_the_engine_is_dead(
    make_engine: EngineFactory, restores_cache: ModelRunner
) -> None:
    """The real serving loop on a free port: healthy, then a fatal fault fails the request in flight with
    a 500 error object, /health turns 503 during the grace period, and the loop returns exit status 1."""
    engine = make_engine()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    app = build_app(engine, served_model_names=["tiny"])
    body = {"model": "tiny", "prompt": prompt_ids(8, 240), "max_tokens": 30, "ignore_eos": True}

    def lose_the_cache(kind: RunnerCall, seqs: list[Sequence]) -> None:
        if kind == "decode":
            for leaf in jax.tree.leaves(restores_cache.cache):
                leaf.delete()
            raise InjectedFault("device fault after donation")

    async def scenario() -> tuple[int, list[int], dict[str, Any], int]:
        serving = asyncio.create_task(_serve(app, ServerOptions(port=port), engine))
        async with aiohttp.ClientSession() as session:
            for _ in range(100):  # the site is up within a few event-loop turns
                try:
                    async with session.get(f"{url}/health") as response:
                        healthy = response.status
                    break
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.05)
            engine.core.fault_injector = lose_the_cache
            async with session.post(f"{url}/v1/completions", json=body) as response:
                failed_status, failure = response.status, await response.json()
            statuses = []
            while not serving.done():
                try:
                    async with session.get(f"{url}/health") as response:
                        statuses.append(response.status)
                except aiohttp.ClientConnectionError:
                    break
                await asyncio.sleep(0.2)
        return healthy, [failed_status, *statuses], failure, await serving

    healthy, statuses, failure, exit_status = asyncio.run(scenario())
    assert healthy == 200
    assert statuses[0] == 500 and set(failure["error"]) == {"message", "type", "param", "code"}
    assert 503 in statuses[1:]
    assert exit_status == 1
