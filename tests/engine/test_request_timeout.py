"""--request-timeout: a request unfinished that long after it reached the engine is aborted, its pages
freed, and the client told (504 with the OpenAI error object, or an error event in a started stream).

Decode steps are slowed down with the fault-injection hook so that timings do not depend on the machine.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from jaxserve.engine.async_engine import AsyncEngine
from jaxserve.engine.core import RunnerCall
from jaxserve.engine.outputs import RequestOutput
from jaxserve.engine.sequence import Sequence
from jaxserve.errors import RequestTimeout
from jaxserve.http.app import build_app
from jaxserve.sampling.params import SamplingParams
from tests.engine.conftest import EngineFactory, collect, pool_back_to_full, prompt_ids, run

TIMEOUT = 0.3
STEP_DELAY = 0.02
"""Each decode step takes at least this long: 60 tokens need over 1 s, far past the timeout, while a
3-token request needs about 0.05 s."""


def slow_engine(make_engine: EngineFactory) -> AsyncEngine:
    engine = make_engine(request_timeout=TIMEOUT)

    def slow_decode(kind: RunnerCall, seqs: list[Sequence]) -> None:
        if kind == "decode":
            time.sleep(STEP_DELAY)

    engine.core.fault_injector = slow_decode
    return engine


def test_a_request_past_the_timeout_is_aborted_and_frees_its_pages(make_engine: EngineFactory) -> None:
    engine = slow_engine(make_engine)
    long = SamplingParams(temperature=0.0, max_tokens=60, ignore_eos=True)
    started = time.perf_counter()
    with pytest.raises(RequestTimeout) as timed_out:
        run(collect(engine, prompt_ids(10, 300), long, "slow"))
    assert TIMEOUT <= time.perf_counter() - started < TIMEOUT + 0.5
    assert timed_out.value.status == 504 and timed_out.value.code == "request_timeout"
    assert run(pool_back_to_full(engine))
    assert engine.in_flight == 0


def test_a_short_request_under_the_timeout_completes(make_engine: EngineFactory) -> None:
    engine = slow_engine(make_engine)
    short = SamplingParams(temperature=0.0, max_tokens=3, ignore_eos=True)
    out = run(collect(engine, prompt_ids(10, 301), short, "quick"))
    assert out.finish_reason == "length" and len(out.token_ids) == 3


def test_the_timeout_must_be_positive(make_engine: EngineFactory) -> None:
    with pytest.raises(ValueError, match="request_timeout"):
        make_engine(request_timeout=0)


def test_a_stream_yields_its_tokens_then_the_timeout(make_engine: EngineFactory) -> None:
    """The streaming case: outputs already sent stay sent; the HTTP layer turns the error into an SSE
    error event followed by [DONE] (jaxserve.http.sse, as for any engine error after the first byte)."""
    engine = slow_engine(make_engine)
    long = SamplingParams(temperature=0.0, max_tokens=60, ignore_eos=True)
    received: list[RequestOutput] = []

    async def read() -> None:
        async for output in engine.generate("streamed", prompt_ids(10, 302), long):
            received.append(output)

    with pytest.raises(RequestTimeout):
        run(read())
    assert received and not received[-1].finished
    assert run(pool_back_to_full(engine))


def test_http_answers_a_timeout_with_a_504_error_object(make_engine: EngineFactory) -> None:
    """Token-id prompts: the tiny model's vocabulary is smaller than its tokenizer's chat template needs."""
    engine = slow_engine(make_engine)

    async def go() -> tuple[int, dict[str, Any]]:
        app = build_app(engine, served_model_names=["tiny"])
        async with TestClient(TestServer(app)) as client:
            payload = {"prompt": prompt_ids(10, 303), "max_tokens": 60, "ignore_eos": True}
            response = await client.post("/v1/completions", json=payload)
            return response.status, await response.json()

    status, body = asyncio.run(go())
    assert status == 504
    assert body["error"]["type"] == "timeout_error" and body["error"]["code"] == "request_timeout"
    assert run(pool_back_to_full(engine))
