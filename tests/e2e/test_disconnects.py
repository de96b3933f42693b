"""A storm of streaming clients that vanish mid-answer: the server frees everything and keeps serving."""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

import aiohttp

from tests.e2e.conftest import RunningServer
from tests.e2e.test_companion_endpoints import scrape
from tests.modeling.parity import load_golden

CLIENTS = 50
GOLDEN = load_golden("smollm2_gguf.json")["cases"][0]


async def _stream_then_leave(
    session: aiohttp.ClientSession, server: RunningServer, index: int, chunks_before_leaving: int
) -> int:
    """Stream a chat and drop the connection after the given number of SSE events (0: right away)."""
    body: dict[str, Any] = {
        "model": server.model,
        "messages": [{"role": "user", "content": f"Count slowly from {index} to {index + 40}."}],
        "max_tokens": 48,
        "stream": True,
        "ignore_eos": True,
    }
    response = await session.post(
        f"{server.base_url}/v1/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {server.api_key}"},
    )
    seen = 0
    try:
        async for line in response.content:
            if seen >= chunks_before_leaving:
                break
            if line.startswith(b"data: {"):
                seen += 1
    finally:
        response.close()  # closes the socket: the server sees the client gone
    return seen


def test_a_disconnect_storm_leaves_no_running_work_and_the_server_answers_correctly(
    server: RunningServer,
) -> None:
    rng = random.Random(7)
    leave_after = [rng.randint(0, 12) for _ in range(CLIENTS)]

    async def storm() -> list[int]:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600)) as session:
            return await asyncio.gather(
                *(_stream_then_leave(session, server, i, n) for i, n in enumerate(leave_after))
            )

    seen = asyncio.run(storm())
    assert seen == leave_after  # every client read exactly as far as it meant to before leaving

    deadline = time.monotonic() + 60
    while True:
        metrics = scrape(server)
        idle = metrics["vllm:num_requests_running"] == 0 and metrics["vllm:num_requests_waiting"] == 0
        if idle and metrics["vllm:kv_cache_usage_perc"] == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert metrics["vllm:num_requests_running"] == 0 and metrics["vllm:num_requests_waiting"] == 0
    assert metrics["vllm:kv_cache_usage_perc"] == 0  # every page back (cached prefixes count as free)

    async def after() -> dict[str, Any]:
        async with aiohttp.ClientSession() as session:
            response = await session.post(
                f"{server.base_url}/v1/chat/completions",
                json={
                    "model": server.model,
                    "messages": GOLDEN["messages"],
                    "temperature": 0,
                    "max_tokens": 8,
                    "return_token_ids": True,
                },
                headers={"Authorization": f"Bearer {server.api_key}"},
            )
            assert response.status == 200
            return await response.json()  # type: ignore[no-any-return]

    reply = asyncio.run(after())
    expected = GOLDEN["greedy_continuation"][:8]
    assert reply["choices"][0]["token_ids"] == expected[: len(reply["choices"][0]["token_ids"])]
    assert len(reply["choices"][0]["token_ids"]) == 8 or reply["choices"][0]["finish_reason"] == "stop"
