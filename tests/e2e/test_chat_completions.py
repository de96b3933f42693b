"""The real server, the real default model, real HTTP: the openai client and raw aiohttp."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import openai
import pytest

from jaxserve.modeling.default_model import default_model_path
from jaxserve.modeling.tokenizer import Tokenizer
from tests.e2e.conftest import RunningServer
from tests.modeling.parity import load_golden

GOLDEN_CASES = load_golden("smollm2_gguf.json")["cases"]
EOS_ID = 2  # <|im_end|>: ends SmolLM2's assistant turn


@pytest.fixture(scope="module")
def client(server: RunningServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.base_url}/v1", api_key=server.api_key, max_retries=0, timeout=300)


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    return Tokenizer.from_path(default_model_path())


def _expected(case: dict[str, Any], max_tokens: int) -> tuple[list[int], str]:
    """The golden greedy tokens the server should return: up to and including EOS, at most max_tokens."""
    tokens = case["greedy_continuation"][:max_tokens]
    if EOS_ID in tokens:
        tokens = tokens[: tokens.index(EOS_ID) + 1]
    return tokens, "stop" if tokens[-1] == EOS_ID else "length"


@pytest.mark.parametrize("case", GOLDEN_CASES[:3], ids=lambda c: c["name"])
def test_greedy_answer_equals_golden(
    case: dict[str, Any], client: openai.OpenAI, tokenizer: Tokenizer
) -> None:
    max_tokens = len(case["greedy_continuation"])
    reply = client.chat.completions.create(
        model="SmolLM2-135M-Instruct", messages=case["messages"], temperature=0, max_tokens=max_tokens
    )
    tokens, finish_reason = _expected(case, max_tokens)
    choice = reply.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == tokenizer.decode(tokens, skip_special_tokens=True)
    assert choice.finish_reason == finish_reason
    assert reply.usage is not None
    assert reply.usage.prompt_tokens == len(case["prompt_ids"])
    assert reply.usage.completion_tokens == len(tokens)
    assert reply.usage.total_tokens == len(case["prompt_ids"]) + len(tokens)
    assert reply.id.startswith("chatcmpl-") and reply.model == "SmolLM2-135M-Instruct"


def test_max_tokens_ends_with_length(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model="SmolLM2-135M-Instruct",
        messages=[{"role": "user", "content": "Tell me a long story about a dragon."}],
        max_completion_tokens=5,
        temperature=0,
    )
    assert reply.choices[0].finish_reason == "length"
    assert reply.usage is not None and reply.usage.completion_tokens == 5


def test_stop_string_cuts_the_answer(client: openai.OpenAI) -> None:
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    full = client.chat.completions.create(model="SmolLM2-135M-Instruct", messages=messages, temperature=0)
    text = full.choices[0].message.content
    assert text and "Paris" in text
    cut = client.chat.completions.create(
        model="SmolLM2-135M-Instruct", messages=messages, temperature=0, stop=["Paris"]
    )
    assert cut.choices[0].message.content == text[: text.index("Paris")]
    assert cut.choices[0].finish_reason == "stop"
    assert cut.choices[0].model_extra is not None and cut.choices[0].model_extra["stop_reason"] == "Paris"


def test_seeded_sampling_is_reproducible(client: openai.OpenAI) -> None:
    def ask() -> str | None:
        reply = client.chat.completions.create(
            model="SmolLM2-135M-Instruct",
            messages=[{"role": "user", "content": "Name a colour."}],
            temperature=1.0,
            top_p=0.9,
            seed=7,
            max_tokens=12,
        )
        return reply.choices[0].message.content

    assert ask() == ask()


def test_models_lists_the_served_model(client: openai.OpenAI) -> None:
    models = client.models.list()
    assert [m.id for m in models.data] == ["SmolLM2-135M-Instruct"]
    assert models.data[0].model_extra is not None and models.data[0].model_extra["max_model_len"] == 2048


def _post(server: RunningServer, body: bytes | str, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    async def go() -> tuple[int, Any]:
        merged = {"Authorization": f"Bearer {server.api_key}", "Content-Type": "application/json"}
        merged.update(headers or {})
        async with aiohttp.ClientSession() as session:
            async with session.post(f"{server.base_url}/v1/chat/completions", data=body, headers=merged) as r:
                return r.status, await r.json(content_type=None)

    return asyncio.run(go())


USER = [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize(
    ("body", "headers", "status", "param"),
    [
        ("{not json", None, 400, None),
        (json.dumps({"messages": USER, "temperature": -1}), None, 400, "temperature"),
        (json.dumps({"messages": USER, "model": "nope"}), None, 404, "model"),
        (json.dumps({"messages": USER, "logits_processors": ["m.P"]}), None, 400, "logits_processors"),
        (json.dumps({"messages": "hello"}), None, 400, "messages"),
        (
            json.dumps(
                {
                    "messages": [
                        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}
                    ]
                }
            ),
            None,
            400,
            None,
        ),
        (json.dumps({"messages": USER}), {"Authorization": "Bearer wrong"}, 401, None),
    ],
    ids=[
        "malformed-json",
        "negative-temperature",
        "unknown-model",
        "unsupported-field",
        "bad-messages",
        "image",
        "bad-key",
    ],
)
def test_bad_requests_get_error_objects(
    server: RunningServer, body: str, headers: dict[str, str] | None, status: int, param: str | None
) -> None:
    got_status, payload = _post(server, body, headers)
    assert got_status == status
    error = payload["error"]
    assert set(error) >= {"message", "type", "param", "code"} and error["message"]
    if param is not None:
        assert error["param"] == param


def test_concurrent_requests_each_get_their_own_answer(server: RunningServer, client: openai.OpenAI) -> None:
    """Requests sharing the batch answer exactly as they do alone (greedy)."""
    prompts = [f"Count from {i} to {i + 5}." for i in range(1, 7)]

    def body(prompt: str) -> dict[str, Any]:
        return {"messages": [{"role": "user", "content": prompt}], "temperature": 0, "max_tokens": 16}

    alone = [
        client.chat.completions.create(model="SmolLM2-135M-Instruct", **body(p)).choices[0].message.content
        for p in prompts
    ]

    async def together() -> list[str]:
        headers = {"Authorization": f"Bearer {server.api_key}"}
        async with aiohttp.ClientSession(headers=headers) as session:

            async def one(prompt: str) -> str:
                async with session.post(f"{server.base_url}/v1/chat/completions", json=body(prompt)) as r:
                    assert r.status == 200
                    return (await r.json())["choices"][0]["message"]["content"]

            return await asyncio.gather(*(one(p) for p in prompts))

    assert asyncio.run(together()) == alone


def test_health_is_open_without_key(server: RunningServer) -> None:
    async def go() -> int:
        async with aiohttp.ClientSession() as session, session.get(f"{server.base_url}/health") as r:
            return r.status

    assert asyncio.run(go()) == 200
