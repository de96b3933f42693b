"""SSE framing, and send_event_stream over real HTTP with plain event sources (no engine involved):
errors before the first byte, failures mid-stream, and clients that leave."""

from __future__ import annotations

import asyncio
import itertools
import json
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from multidict import CIMultiDict

from jaxserve.errors import EngineFault, InvalidRequest
from jaxserve.http.middleware import error_middleware
from jaxserve.http.sse import DONE_EVENT, error_event, send_event_stream, sse_event

Source = Callable[[], AsyncIterator[bytes]]


def test_an_event_is_one_data_line_and_a_blank_line() -> None:
    assert sse_event('{"a": "x y"}') == b'data: {"a": "x y"}\n\n'
    assert sse_event('{"t": "caf\u00e9"}') == 'data: {"t": "café"}\n\n'.encode()
    assert DONE_EVENT == b"data: [DONE]\n\n"


@pytest.mark.parametrize("data", ["a\nb", "a\rb"])
def test_a_line_break_in_the_data_is_refused(data: str) -> None:
    with pytest.raises(ValueError, match="line break"):
        sse_event(data)


def test_error_event_carries_the_openai_error_object() -> None:
    event = error_event(EngineFault("the engine failed", code="engine_dead"))
    assert event.startswith(b"data: ") and event.endswith(b"\n\n")
    assert json.loads(event[len(b"data: ") : -2]) == {
        "error": {
            "message": "the engine failed",
            "type": "internal_error",
            "param": None,
            "code": "engine_dead",
        }
    }


async def _serve(source: Source, *, handler_cancellation: bool = True) -> tuple[web.AppRunner, str]:
    async def handler(request: web.Request) -> web.StreamResponse:
        return await send_event_stream(request, source(), headers={"X-Request-Id": "abc"})

    app = web.Application(middlewares=[error_middleware])
    app.router.add_get("/stream", handler)
    runner = web.AppRunner(app, handler_cancellation=handler_cancellation)
    await runner.setup()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    await web.SockSite(runner, sock).start()
    return runner, f"http://127.0.0.1:{sock.getsockname()[1]}/stream"


def fetch(source: Source) -> tuple[int, CIMultiDict[str], bytes]:
    async def go() -> tuple[int, CIMultiDict[str], bytes]:
        runner, url = await _serve(source)
        try:
            async with aiohttp.ClientSession() as session, session.get(url) as response:
                return response.status, CIMultiDict(response.headers), await response.read()
        finally:
            await runner.cleanup()

    return asyncio.run(go())


def events(*payloads: dict[str, Any]) -> list[bytes]:
    return [sse_event(json.dumps(p)) for p in payloads]


def test_events_are_streamed_then_done() -> None:
    async def source() -> AsyncIterator[bytes]:
        for event in events({"n": 1}, {"n": 2}):
            yield event

    status, headers, body = fetch(source)
    assert status == 200
    assert headers["Content-Type"] == "text/event-stream"
    assert headers["Cache-Control"] == "no-cache"
    assert headers["X-Request-Id"] == "abc"
    assert body == b"".join(events({"n": 1}, {"n": 2})) + DONE_EVENT


def test_a_failure_before_the_first_event_is_an_ordinary_error_response() -> None:
    async def source() -> AsyncIterator[bytes]:
        raise InvalidRequest("the prompt is too long", param="messages")
        yield b""  # pragma: no cover - makes this an async generator

    status, headers, body = fetch(source)
    assert status == 400
    assert headers["Content-Type"].startswith("application/json")
    assert json.loads(body)["error"]["param"] == "messages"


def test_an_engine_fault_mid_stream_becomes_an_error_event_then_done() -> None:
    async def source() -> AsyncIterator[bytes]:
        yield events({"n": 1})[0]
        raise EngineFault("the engine failed while running this request")

    status, _, body = fetch(source)
    assert status == 200
    assert body == events({"n": 1})[0] + error_event(
        EngineFault("the engine failed while running this request")
    ) + (DONE_EVENT)


def test_an_unexpected_error_mid_stream_is_reported_without_its_details() -> None:
    async def source() -> AsyncIterator[bytes]:
        yield events({"n": 1})[0]
        raise RuntimeError("secret internal detail")

    _, _, body = fetch(source)
    error = json.loads(body.split(b"\n\n")[1][len(b"data: ") :])["error"]
    assert error["type"] == "internal_error" and "secret" not in error["message"]
    assert body.endswith(b"\n\n" + DONE_EVENT)


@pytest.mark.parametrize("handler_cancellation", [True, False])
def test_a_client_that_leaves_gets_its_source_closed_at_once(handler_cancellation: bool) -> None:
    """Under cancellation the handler is cancelled; without it the next write fails. Either way the
    source (for a chat stream: the engine's iterator, whose closing aborts the request) is closed."""

    async def go() -> None:
        closed = asyncio.Event()
        produced = 0

        async def source() -> AsyncIterator[bytes]:
            nonlocal produced
            try:
                for n in itertools.count():
                    produced = n + 1
                    yield sse_event(json.dumps({"n": n}))
                    await asyncio.sleep(0.01)
            finally:
                closed.set()

        runner, url = await _serve(source, handler_cancellation=handler_cancellation)
        try:
            async with aiohttp.ClientSession() as session:
                response = await session.get(url)
                assert await response.content.readuntil(b"\n\n") == sse_event('{"n": 0}')
                assert await response.content.readuntil(b"\n\n") == sse_event('{"n": 1}')
                response.close()  # drop the connection mid-stream
                await asyncio.wait_for(closed.wait(), timeout=5)
                stopped_at = produced
                await asyncio.sleep(0.1)
                assert produced == stopped_at
        finally:
            await runner.cleanup()

    asyncio.run(go())


def test_a_slow_reader_does_not_lose_events() -> None:
    """Writes are awaited (back-pressure): a reader slower than its source still gets every event, in order."""
    count = 2000
    payload = "x" * 1000

    async def go() -> bytes:
        async def source() -> AsyncIterator[bytes]:
            for n in range(count):
                yield sse_event(json.dumps({"n": n, "pad": payload}))

        runner, url = await _serve(source)
        try:
            async with aiohttp.ClientSession() as session, session.get(url) as response:
                chunks = []
                while True:
                    chunk = await response.content.read(4096)
                    if not chunk:
                        break
                    chunks.append(chunk)
                    await asyncio.sleep(0.0005)
                return b"".join(chunks)
        finally:
            await runner.cleanup()

    body = asyncio.run(go())
    parts = body.split(b"\n\n")
    assert parts[-2:] == [b"data: [DONE]", b""]
    assert [json.loads(p[len(b"data: ") :])["n"] for p in parts[:-2]] == list(range(count))
