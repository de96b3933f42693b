"""A full queue answers 503 with Retry-After and the error object, over HTTP on the real tiny engine."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from jaxserve.http.app import build_app
from tests.engine.conftest import EngineFactory, pool_back_to_full, prompt_ids, run


def test_requests_beyond_the_queue_get_a_503_with_retry_after(make_engine: EngineFactory) -> None:
    engine = make_engine()
    engine.max_in_flight = 1  # one running request fills the server
    slow = {"model": "tiny", "prompt": prompt_ids(8, 300), "max_tokens": 40, "ignore_eos": True}
    quick = {"model": "tiny", "prompt": prompt_ids(8, 301), "max_tokens": 2}

    async def scenario() -> tuple[int, list[tuple[int, dict[str, str], dict[str, Any]]], int]:
        async with TestClient(TestServer(build_app(engine, served_model_names=["tiny"]))) as client:
            running = asyncio.ensure_future(client.post("/v1/completions", json=slow))
            while engine.in_flight == 0:  # the first request holds the only place
                await asyncio.sleep(0.01)
            refused = []
            for _ in range(3):
                response = await client.post("/v1/completions", json=quick)
                refused.append((response.status, dict(response.headers), await response.json()))
            first = await running
            status = first.status
            first.release()
            after = await client.post("/v1/completions", json=quick)  # capacity is back
            return status, refused, after.status

    first_status, refused, after_status = run(scenario())
    assert first_status == 200 and after_status == 200
    for status, headers, body in refused:
        assert status == 503
        assert headers["Retry-After"] == "1"
        assert set(body["error"]) == {"message", "type", "param", "code"}
        assert body["error"]["code"] == "queue_full"
    assert run(pool_back_to_full(engine))
