"""Property-based fuzzing of `/v1/chat/completions` on the real server and default model.

Here chat requests reach the engine (unlike on the tiny model, tests/http/test_fuzz_requests.py): each
Hypothesis example is a batch of 1-6 generated chat bodies, plausible or mutated, sent concurrently; every
answer must satisfy response_checks, and a greedy request must answer the same before and after.
CI runs a fixed seed; `--long` runs 20x the examples with a random one.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.e2e.conftest import RunningServer
from tests.http.fuzz_strategies import body_bytes, fuzz_settings, mutated, plausible_chat_body
from tests.http.response_checks import Tally, check_response

pytestmark = pytest.mark.e2e

CHAT = "/v1/chat/completions"
REQUEST_TIMEOUT_SECONDS = 240  # generous: the first request of a new batch shape compiles for up to a minute
GREEDY = {
    "messages": [{"role": "user", "content": "Name three colours."}],
    "max_tokens": 12,
    "temperature": 0,
}


def test_fuzzed_chat_requests_on_the_real_model_never_fail_the_server(
    server: RunningServer, fuzz_examples: Callable[[int], int], long_run: bool
) -> None:
    tally = Tally()
    headers = {"Authorization": f"Bearer {server.api_key}", "Content-Type": "application/json"}
    bodies = st.one_of(plausible_chat_body(), mutated(plausible_chat_body(), "ChatCompletionRequest"))

    async def main() -> None:
        # A hang fails the example (and shows its batch) instead of running into the test timeout.
        timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_SECONDS)
        async with aiohttp.ClientSession(
            base_url=server.base_url, headers=headers, timeout=timeout
        ) as session:
            loop = asyncio.get_running_loop()

            async def send(payload: bytes) -> tuple[int, str, bytes]:
                async with session.post(CHAT, data=payload) as response:
                    return response.status, response.headers.get("Content-Type", ""), await response.read()

            async def greedy() -> bytes:
                status, _, raw = await send(body_bytes(GREEDY))
                assert status == 200, raw[:300]
                return raw

            def answer_text(raw: bytes) -> str:
                text: str = json.loads(raw)["choices"][0]["message"]["content"]
                return text

            before = answer_text(await greedy())

            async def send_batch(batch: list[Any]) -> list[tuple[int, str, bytes]]:
                return await asyncio.gather(*(send(body_bytes(body)) for body in batch))

            @fuzz_settings(fuzz_examples(80), long_run)
            @given(st.lists(bodies, min_size=1, max_size=6))
            def check(batch: list[Any]) -> None:
                answers = asyncio.run_coroutine_threadsafe(send_batch(batch), loop).result()
                for status, content_type, raw in answers:
                    check_response(status, content_type, raw, object_name="chat.completion", tally=tally)

            await asyncio.to_thread(check)
            assert answer_text(await greedy()) == before

    started = time.monotonic()
    asyncio.run(main())
    print(f"e2e chat fuzz: {tally.total} requests in {time.monotonic() - started:.1f}s: {tally.statuses}")
    assert tally.generated >= tally.total // 5, tally.statuses
