"""Property-based fuzzing of the request schema against the real application over the real tiny engine.

Each Hypothesis example is a batch of 1-6 generated bodies (plausible or mutated, see fuzz_strategies)
sent concurrently, so bad requests run beside good ones. Every answer must satisfy response_checks (never
5xx, 4xx = error object, 200 = well-formed); afterwards the engine must be idle with its KV cache free, and
a greedy request must return exactly what it returned before the fuzzing (nothing leaked into it).

The tiny model's chat template emits ids outside its 256-id vocabulary, so chat requests stop at a 400
before the engine here (tests/e2e/test_fuzz_e2e.py fuzzes chat on the real model); completions with
token-id prompts do generate. CI runs a fixed seed; `--long` runs 20x the examples with a random one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from aiohttp.test_utils import TestClient, TestServer
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxserve.engine.async_engine import AsyncEngine
from jaxserve.http.app import build_app
from tests.engine.conftest import EngineFactory, pool_back_to_full
from tests.http.fuzz_strategies import (
    Body,
    body_bytes,
    fuzz_settings,
    mutated,
    plausible_chat_body,
    plausible_completion_body,
)
from tests.http.response_checks import Tally, check_response

MODEL = "tiny"
CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
GREEDY = {"model": MODEL, "prompt": [5, 6, 7, 8, 9], "max_tokens": 8, "temperature": 0, "ignore_eos": True}


async def send(client: TestClient[Any, Any], path: str, payload: bytes) -> tuple[int, str, bytes]:
    response = await client.post(path, data=payload, headers={"Content-Type": "application/json"})
    return response.status, response.headers.get("Content-Type", ""), await response.read()


async def greedy_text(client: TestClient[Any, Any]) -> str:
    response = await client.post(COMPLETIONS, json=GREEDY)
    assert response.status == 200, await response.text()
    text: str = (await response.json())["choices"][0]["text"]
    return text


def fuzz_app(
    engine: AsyncEngine, path: str, bodies: st.SearchStrategy[Any], object_name: str, run_settings: settings
) -> Tally:
    """Serve the app over `engine`, fuzz `path` with batches of `bodies`; check isolation and clean-up."""
    tally = Tally()

    async def main() -> None:
        async with TestClient(TestServer(build_app(engine, served_model_names=[MODEL]))) as client:
            loop = asyncio.get_running_loop()
            before = await greedy_text(client)

            async def send_batch(batch: list[Any]) -> list[tuple[int, str, bytes]]:
                return await asyncio.gather(*(send(client, path, body_bytes(body)) for body in batch))

            # Hypothesis drives the examples from a worker thread; each batch runs on the server's loop.
            @run_settings
            @given(st.lists(bodies, min_size=1, max_size=6))
            def check(batch: list[Any]) -> None:
                answers = asyncio.run_coroutine_threadsafe(send_batch(batch), loop).result(timeout=120)
                for status, content_type, raw in answers:
                    check_response(status, content_type, raw, object_name=object_name, tally=tally)

            await asyncio.to_thread(check)
            assert await pool_back_to_full(engine), "the engine kept requests or KV pages after the fuzzing"
            assert await greedy_text(client) == before

    asyncio.run(main())
    return tally


def test_fuzzed_completion_requests_never_fail_the_server_nor_disturb_their_neighbours(
    make_engine: EngineFactory, fuzz_examples: Callable[[int], int], long_run: bool
) -> None:
    engine = make_engine()
    vocab = engine.runner.vocab_size
    bodies = st.one_of(
        plausible_completion_body(vocab),
        plausible_completion_body(vocab, max_extra_fields=0),
        mutated(plausible_completion_body(vocab), "CompletionRequest"),
    )
    started = time.monotonic()
    tally = fuzz_app(
        engine, COMPLETIONS, bodies, "text_completion", fuzz_settings(fuzz_examples(600), long_run)
    )
    print(f"completions fuzz: {tally.total} requests in {time.monotonic() - started:.1f}s: {tally.statuses}")
    # The run must have exercised generation, not only validation.
    assert tally.generated >= tally.total // 5, tally.statuses


def test_fuzzed_chat_requests_never_fail_the_server(
    make_engine: EngineFactory, fuzz_examples: Callable[[int], int], long_run: bool
) -> None:
    engine = make_engine()
    bodies: st.SearchStrategy[Body] = st.one_of(
        plausible_chat_body(), mutated(plausible_chat_body(), "ChatCompletionRequest")
    )
    started = time.monotonic()
    tally = fuzz_app(engine, CHAT, bodies, "chat.completion", fuzz_settings(fuzz_examples(300), long_run))
    print(f"chat fuzz: {tally.total} requests in {time.monotonic() - started:.1f}s: {tally.statuses}")
    assert tally.total >= 300


def test_a_request_id_no_header_can_carry_is_answered_without_the_echo(make_engine: EngineFactory) -> None:
    """Found by the e2e fuzz: `request_id: "\\x1f"` was echoed in X-Request-Id, which aiohttp refuses to
    write after the handler returned, so the client saw a dropped connection instead of its answer."""
    engine = make_engine()

    async def main() -> None:
        async with TestClient(TestServer(build_app(engine, served_model_names=[MODEL]))) as client:
            for request_id, echoed in [("a\x1fb", False), ("line\nbreak", False), ("tab\tok", True)]:
                response = await client.post(COMPLETIONS, json={**GREEDY, "request_id": request_id})
                assert response.status == 200, await response.text()
                assert (await response.json())["id"] == f"cmpl-{request_id}"
                assert response.headers.get("X-Request-Id") == (request_id if echoed else None)

    asyncio.run(main())
