"""`n` choices, beam search, cached-token usage and priority through the real server and default model."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import openai
import pytest

from tests.e2e.conftest import RunningServer

MODEL = "SmolLM2-135M-Instruct"
QUESTION = [{"role": "user", "content": "Name a colour and say why you like it."}]


@pytest.fixture(scope="module")
def client(server: RunningServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.base_url}/v1", api_key=server.api_key, max_retries=0, timeout=300)


def post(server: RunningServer, path: str, body: dict[str, Any]) -> tuple[int, Any]:
    async def go() -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {server.api_key}"}
        async with aiohttp.ClientSession(headers=headers) as session:
            async with session.post(f"{server.base_url}{path}", json={"model": MODEL, **body}) as r:
                return r.status, await r.json()

    return asyncio.run(go())


def sampled(server: RunningServer, **fields: Any) -> dict[str, Any]:
    body = {"messages": QUESTION, "max_tokens": 10, "temperature": 1.0, "return_token_ids": True, **fields}
    status, reply = post(server, "/v1/chat/completions", body)
    assert status == 200, reply
    return reply  # type: ignore[no-any-return]


def test_n_seeded_choices_differ_and_reproduce(server: RunningServer) -> None:
    reply = sampled(server, n=3, seed=11)
    choices = reply["choices"]
    assert [c["index"] for c in choices] == [0, 1, 2]
    texts = [c["message"]["content"] for c in choices]
    assert len(set(texts)) > 1, "choice i is seeded seed + i, so the choices differ"
    assert [c["message"]["content"] for c in sampled(server, n=3, seed=11)["choices"]] == texts
    # Choice i is exactly the single-choice request seeded seed + i.
    assert sampled(server, seed=12)["choices"][0]["message"]["content"] == texts[1]
    usage = reply["usage"]
    assert usage["prompt_tokens"] == len(reply["prompt_token_ids"])
    assert usage["completion_tokens"] == sum(len(c["token_ids"]) for c in choices)
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def test_greedy_choices_are_identical(server: RunningServer) -> None:
    choices = sampled(server, n=2, temperature=0)["choices"]
    assert choices[0]["message"]["content"] == choices[1]["message"]["content"]


def test_streamed_choices_equal_the_whole_answer(client: openai.OpenAI, server: RunningServer) -> None:
    whole = sampled(server, n=2, seed=5)
    stream = client.chat.completions.create(
        model=MODEL,
        messages=QUESTION,  # type: ignore[arg-type]
        max_tokens=10,
        temperature=1.0,
        n=2,
        seed=5,
        stream=True,
        stream_options={"include_usage": True},
    )
    texts = ["", ""]
    finishes: list[list[str | None]] = [[], []]
    usage = None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            texts[choice.index] += choice.delta.content or ""
            finishes[choice.index].append(choice.finish_reason)
    assert texts == [c["message"]["content"] for c in whole["choices"]]
    assert all(f[-1] is not None and f[:-1] == [None] * (len(f) - 1) for f in finishes)
    assert usage is not None and usage.completion_tokens == whole["usage"]["completion_tokens"]


def test_a_repeated_prompt_reports_cached_tokens(server: RunningServer) -> None:
    first = sampled(
        server, max_tokens=2, temperature=0, messages=[{"role": "user", "content": "Cache me, " * 8}]
    )
    again = sampled(
        server, max_tokens=2, temperature=0, messages=[{"role": "user", "content": "Cache me, " * 8}]
    )
    prompt_tokens = again["usage"]["prompt_tokens"]
    assert first["usage"]["prompt_tokens_details"]["cached_tokens"] < prompt_tokens
    assert 0 < again["usage"]["prompt_tokens_details"]["cached_tokens"] < prompt_tokens


def test_beam_search_returns_n_different_beams(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model=MODEL,
        messages=QUESTION,  # type: ignore[arg-type]
        max_tokens=8,
        n=2,
        extra_body={"use_beam_search": True},
    )
    texts = [c.message.content for c in reply.choices]
    assert [c.index for c in reply.choices] == [0, 1]
    assert len(texts) == 2 and texts[0] != texts[1] and all(texts)
    assert all(c.finish_reason in ("stop", "length") for c in reply.choices)
    streamed = client.chat.completions.create(
        model=MODEL,
        messages=QUESTION,  # type: ignore[arg-type]
        max_tokens=8,
        n=2,
        stream=True,
        extra_body={"use_beam_search": True},
    )
    again = ["", ""]
    for chunk in streamed:
        for choice in chunk.choices:
            again[choice.index] += choice.delta.content or ""
    assert again == texts, "beam search is deterministic"


def test_completions_take_n_and_beam_search(server: RunningServer) -> None:
    body = {"prompt": "The colour of the sky is", "max_tokens": 5, "n": 2, "seed": 1}
    status, reply = post(server, "/v1/completions", body)
    assert status == 200 and [c["index"] for c in reply["choices"]] == [0, 1]
    status, beams = post(server, "/v1/completions", {**body, "use_beam_search": True, "seed": None})
    assert status == 200 and len({c["text"] for c in beams["choices"]}) == 2


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"priority": 1}, "priority"),
        ({"n": 129}, "n"),
        ({"use_beam_search": True, "n": 11}, "n"),
        ({"use_beam_search": True, "top_p": 0.5}, "top_p"),
        ({"length_penalty": 0.5}, "length_penalty"),
    ],
)
def test_refusals_name_the_field(server: RunningServer, fields: dict[str, Any], param: str) -> None:
    status, reply = post(server, "/v1/chat/completions", {"messages": QUESTION, **fields})
    assert status == 400 and reply["error"]["param"] == param
