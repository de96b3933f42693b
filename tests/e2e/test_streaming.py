"""`stream=true` through the real server and the real default model: the official openai client for
content, usage and logprobs; raw aiohttp for the bytes on the wire and for clients that leave early."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp
import openai
import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from tests.e2e.conftest import RunningServer

MODEL = "SmolLM2-135M-Instruct"
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
GREEDY: dict[str, Any] = {"model": MODEL, "messages": QUESTION, "temperature": 0}


@pytest.fixture(scope="module")
def client(server: RunningServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.base_url}/v1", api_key=server.api_key, max_retries=0, timeout=300)


def both(
    client: openai.OpenAI, stream_options: dict[str, bool] | None = None, **fields: Any
) -> tuple[ChatCompletion, list[ChatCompletionChunk]]:
    """The same request answered whole and streamed (stream_options go to the streamed one only)."""
    body = {**GREEDY, **fields}
    full = client.chat.completions.create(**body)
    extra = {} if stream_options is None else {"stream_options": stream_options}
    return full, list(client.chat.completions.create(**body, stream=True, **extra))


def content_chunks(chunks: list[ChatCompletionChunk]) -> list[ChatCompletionChunk]:
    """The chunks after the role chunk that belong to the choice (not the usage chunk)."""
    return [c for c in chunks[1:] if c.choices]


@pytest.mark.parametrize("max_tokens", [6, 64], ids=["length", "stop"])
def test_concatenated_deltas_equal_the_non_streaming_answer(client: openai.OpenAI, max_tokens: int) -> None:
    full, chunks = both(client, max_tokens=max_tokens)
    answer = full.choices[0]
    assert answer.finish_reason == ("length" if max_tokens == 6 else "stop")

    role = chunks[0].choices[0]
    assert (role.delta.role, role.delta.content, role.finish_reason) == ("assistant", "", None)
    body = content_chunks(chunks)
    assert "".join(c.choices[0].delta.content or "" for c in body) == answer.message.content
    assert all(c.choices[0].delta.role is None for c in body)
    assert [c.choices[0].finish_reason for c in body] == [None] * (len(body) - 1) + [answer.finish_reason]
    assert all(c.choices[0].delta.content for c in body[:-1]), "no empty deltas before the finish"
    assert len({c.id for c in chunks}) == 1 and chunks[0].id.startswith("chatcmpl-")
    assert len({c.created for c in chunks}) == 1
    assert all(c.object == "chat.completion.chunk" and c.model == MODEL and c.usage is None for c in chunks)


def test_a_stop_string_ends_the_stream_with_its_stop_reason(client: openai.OpenAI) -> None:
    full, chunks = both(client, stop=["Paris"], max_tokens=64)
    body = content_chunks(chunks)
    assert "".join(c.choices[0].delta.content or "" for c in body) == full.choices[0].message.content
    last = body[-1].choices[0]
    assert last.finish_reason == "stop"
    assert last.model_extra is not None and last.model_extra["stop_reason"] == "Paris"


def test_include_usage_adds_a_final_usage_chunk_with_exact_counts(client: openai.OpenAI) -> None:
    full, chunks = both(client, max_tokens=12, stream_options={"include_usage": True})
    *rest, final = chunks
    assert final.choices == [] and final.usage is not None
    assert full.usage is not None
    assert (final.usage.prompt_tokens, final.usage.completion_tokens, final.usage.total_tokens) == (
        full.usage.prompt_tokens,
        full.usage.completion_tokens,
        full.usage.total_tokens,
    )
    assert all(c.usage is None for c in rest)  # vLLM leaves usage off the other chunks


def test_continuous_usage_stats_put_usage_so_far_on_every_chunk(client: openai.OpenAI) -> None:
    full, chunks = both(
        client, max_tokens=12, stream_options={"include_usage": True, "continuous_usage_stats": True}
    )
    assert full.usage is not None
    usages = [c.usage for c in chunks]
    assert all(u is not None and u.prompt_tokens == full.usage.prompt_tokens for u in usages)
    completion = [u.completion_tokens for u in usages if u is not None]
    assert completion[0] == 0  # the role chunk
    assert completion[1:-1] == sorted(completion[1:-1]) and completion[1] >= 1
    assert completion[-2] == completion[-1] == full.usage.completion_tokens
    assert all(u is not None and u.total_tokens == u.prompt_tokens + u.completion_tokens for u in usages)


def test_logprobs_per_chunk_concatenate_to_the_non_streaming_logprobs(client: openai.OpenAI) -> None:
    full, chunks = both(client, max_tokens=6, logprobs=True, top_logprobs=3)
    assert chunks[0].choices[0].logprobs is None
    streamed = [
        entry
        for c in content_chunks(chunks)
        if c.choices[0].logprobs is not None
        for entry in c.choices[0].logprobs.content or []
    ]
    assert full.choices[0].logprobs is not None and full.choices[0].logprobs.content is not None
    whole = full.choices[0].logprobs.content
    assert len(whole) == 6 and full.choices[0].finish_reason == "length"
    assert [(e.token, e.bytes) for e in streamed] == [(e.token, e.bytes) for e in whole]
    assert [e.logprob for e in streamed] == pytest.approx([e.logprob for e in whole], abs=1e-4)
    assert [[t.token for t in e.top_logprobs] for e in streamed] == [
        [t.token for t in e.top_logprobs] for e in whole
    ]
    for chunk in content_chunks(chunks):  # each chunk's logprobs are its own tokens
        entries = chunk.choices[0].logprobs.content if chunk.choices[0].logprobs else None
        assert entries and "".join(e.token for e in entries) == chunk.choices[0].delta.content


def post(
    server: RunningServer, body: dict[str, Any], headers: dict[str, str] | None = None
) -> tuple[int, Any, bytes]:
    """Status, headers and the raw body bytes of one POST, read to the end."""

    async def go() -> tuple[int, Any, bytes]:
        merged = {"Authorization": f"Bearer {server.api_key}", **(headers or {})}
        async with aiohttp.ClientSession(headers=merged) as session:
            async with session.post(f"{server.base_url}/v1/chat/completions", json=body) as r:
                return r.status, r.headers.copy(), await r.read()

    return asyncio.run(go())


def test_the_wire_format_is_sse_byte_for_byte(server: RunningServer) -> None:
    status, headers, raw = post(
        server, {**GREEDY, "max_tokens": 5, "stream": True}, headers={"X-Request-Id": "sse-raw-1"}
    )
    assert status == 200
    assert headers["Content-Type"] == "text/event-stream"
    assert headers["Cache-Control"] == "no-cache"
    assert headers["X-Request-Id"] == "sse-raw-1"
    assert raw.endswith(b"\n\ndata: [DONE]\n\n")
    events = raw.split(b"\n\n")
    assert events[-1] == b"" and events[-2] == b"data: [DONE]"
    chunks = []
    for event in events[:-2]:
        assert event.startswith(b"data: ") and b"\n" not in event and b"\r" not in event
        chunks.append(json.loads(event[len(b"data: ") :]))
    assert all(c["id"] == "chatcmpl-sse-raw-1" and c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"] == [
        {"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}
    ]
    for chunk in chunks[1:-1]:
        assert set(chunk) == {"id", "object", "created", "model", "choices"}  # no usage key at all
        assert set(chunk["choices"][0]) == {"index", "delta", "logprobs", "finish_reason"}
        assert set(chunk["choices"][0]["delta"]) == {"content"}
    assert set(chunks[-1]["choices"][0]) == {"index", "delta", "logprobs", "finish_reason", "stop_reason"}
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        ({"stream_options": {"include_usage": True}}, 400, "stream_options"),
        ({"stream": False, "stream_options": {"continuous_usage_stats": True}}, 400, "stream_options"),
        ({"stream": True, "prompt_logprobs": 1}, 400, "prompt_logprobs"),
        ({"stream": True, "model": "nope"}, 404, "model"),
        ({"stream": True, "stop_token_ids": [10**7]}, 400, "stop_token_ids"),  # refused by the engine
    ],
    ids=["options-without-stream", "options-with-stream-false", "prompt-logprobs", "unknown-model", "engine"],
)
def test_errors_before_the_first_byte_are_error_objects(
    server: RunningServer, body: dict[str, Any], status: int, param: str
) -> None:
    got, headers, raw = post(server, {**GREEDY, "max_tokens": 4, **body})
    assert got == status
    assert headers["Content-Type"].startswith("application/json")
    assert json.loads(raw)["error"]["param"] == param


def test_clients_that_leave_mid_stream_free_their_slots(server: RunningServer, client: openai.OpenAI) -> None:
    """Fill every slot (the fixture serves 4 sequences) with long generations, read two events of each,
    hang up. Had they kept generating (1500 tokens each, minutes on CPU), a new request would wait for a
    slot; as they are aborted, it is answered at once."""
    long_body = {**GREEDY, "max_tokens": 1500, "ignore_eos": True, "stream": True}
    names = [f"leave-{i}-{time.monotonic_ns()}" for i in range(4)]

    async def start_and_leave() -> None:
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {server.api_key}"}) as session:
            url = f"{server.base_url}/v1/chat/completions"
            responses = [await session.post(url, json=long_body, headers={"X-Request-Id": n}) for n in names]
            for response in responses:
                assert response.status == 200
                for _ in range(2):
                    assert (await response.content.readuntil(b"\n\n")).startswith(b"data: {")
            for response in responses:
                response.close()  # drop the connection mid-stream

    asyncio.run(start_and_leave())
    started = time.monotonic()
    reply = client.chat.completions.create(**GREEDY, max_tokens=4)
    assert reply.choices[0].finish_reason == "length"
    assert time.monotonic() - started < 30, "the abandoned requests kept their slots"
    status, _, raw = post(server, {**GREEDY, "max_tokens": 4, "stream": True})
    assert status == 200 and raw.endswith(b"data: [DONE]\n\n")

    log = server.log_path.read_text()
    for name in names:
        assert f"client left chatcmpl-{name}-" in log

    async def health() -> int:
        async with aiohttp.ClientSession() as session, session.get(f"{server.base_url}/health") as r:
            return r.status

    assert asyncio.run(health()) == 200
