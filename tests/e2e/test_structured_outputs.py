"""Structured outputs and forced tool calls through the real server and the real default model.

Few requests with small max_tokens: the schemas bound every string and array, so a constrained greedy
answer finishes ("stop") well within the limit, and each answer is checked against its schema.
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import aiohttp
import openai
import pytest

from tests.e2e.conftest import RunningServer
from tests.sampling.json_schema_check import schema_errors

MODEL = "SmolLM2-135M-Instruct"
PERSON = [{"role": "user", "content": "Describe a person called Ada as JSON."}]
COMPACT = {"structured_outputs": {"disable_any_whitespace": True}}
"""Compact JSON (vLLM's disable_any_whitespace) keeps a greedy answer short."""

SCHEMAS: dict[str, dict[str, Any]] = {
    "nested": {
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 10},
            "address": {
                "type": "object",
                "properties": {
                    "city": {"type": "string", "maxLength": 10},
                    "zip": {"type": "integer", "minimum": 10000, "maximum": 99999},
                },
                "required": ["city", "zip"],
                "additionalProperties": False,
            },
        },
        "required": ["name", "address"],
        "additionalProperties": False,
    },
    "array": {
        "type": "object",
        "properties": {
            "skills": {
                "type": "array",
                "items": {"type": "string", "maxLength": 8},
                "minItems": 1,
                "maxItems": 3,
            }
        },
        "required": ["skills"],
        "additionalProperties": False,
    },
    "enum": {
        "type": "object",
        "properties": {
            "mood": {"enum": ["happy", "sad", "calm"]},
            "level": {"type": "integer", "enum": [1, 2, 3]},
        },
        "required": ["mood", "level"],
        "additionalProperties": False,
    },
    "bounds": {
        "type": "object",
        "properties": {
            "age": {"type": "integer", "minimum": 18, "maximum": 65},
            "score": {"type": "number", "minimum": 0, "maximum": 10},
        },
        "required": ["age", "score"],
        "additionalProperties": False,
    },
}

WEATHER_PARAMETERS = {
    "type": "object",
    "properties": {"city": {"type": "string", "maxLength": 12}, "unit": {"enum": ["celsius", "fahrenheit"]}},
    "required": ["city", "unit"],
    "additionalProperties": False,
}
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "parameters": WEATHER_PARAMETERS}},
    {
        "type": "function",
        "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}},
    },
]
NAMED = {"type": "function", "function": {"name": "get_weather"}}
WEATHER_QUESTION = [{"role": "user", "content": "What is the weather in Paris?"}]


@pytest.fixture(scope="module")
def client(server: RunningServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.base_url}/v1", api_key=server.api_key, max_retries=0, timeout=300)


def post(server: RunningServer, bodies: list[dict[str, Any]]) -> list[tuple[int, Any]]:
    """The requests, sent together (the engine batches them), as (status, JSON body)."""

    async def one(session: aiohttp.ClientSession, body: dict[str, Any]) -> tuple[int, Any]:
        async with session.post(f"{server.base_url}/v1/chat/completions", json=body) as response:
            return response.status, await response.json()

    async def all_of() -> list[tuple[int, Any]]:
        headers = {"Authorization": f"Bearer {server.api_key}"}
        async with aiohttp.ClientSession(headers=headers) as session:
            return list(await asyncio.gather(*(one(session, body) for body in bodies)))

    return asyncio.run(all_of())


def chat_body(**fields: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": PERSON, "temperature": 0, "max_tokens": 64, **fields}


def test_json_schema_answers_validate_against_their_schemas(server: RunningServer) -> None:
    bodies = [
        chat_body(
            response_format={"type": "json_schema", "json_schema": {"name": name, "schema": schema}},
            **COMPACT,
        )
        for name, schema in SCHEMAS.items()
    ]
    for (status, body), (name, schema) in zip(post(server, bodies), SCHEMAS.items(), strict=True):
        assert status == 200, body
        choice = body["choices"][0]
        assert choice["finish_reason"] == "stop", (name, choice)
        assert schema_errors(json.loads(choice["message"]["content"]), schema) == [], name


def test_regex_and_choice_answers_match(server: RunningServer) -> None:
    regex = r"[A-Z][a-z]{2,8} is [0-9]{1,2}"
    (s1, regex_body), (s2, choice_body) = post(
        server,
        [
            chat_body(structured_outputs={"regex": regex}),
            chat_body(
                structured_outputs={"choice": ["yes", "no", "maybe"]},
                messages=[{"role": "user", "content": "Is the sky blue?"}],
            ),
        ],
    )
    assert s1 == 200 and s2 == 200
    assert re.fullmatch(regex, regex_body["choices"][0]["message"]["content"])
    assert choice_body["choices"][0]["message"]["content"] in ("yes", "no", "maybe")


def test_named_tool_choice_returns_valid_arguments_whole_and_streamed(client: openai.OpenAI) -> None:
    request: dict[str, Any] = {
        "model": MODEL,
        "messages": WEATHER_QUESTION,
        "temperature": 0,
        "max_tokens": 48,
        "tools": TOOLS,
        "tool_choice": NAMED,
    }
    full = client.chat.completions.create(**request).choices[0]
    assert full.finish_reason == "stop" and not full.message.content
    (call,) = full.message.tool_calls or []
    assert call.type == "function" and call.id.startswith("call_") and call.function.name == "get_weather"
    assert schema_errors(json.loads(call.function.arguments), WEATHER_PARAMETERS) == []

    chunks = list(client.chat.completions.create(**request, stream=True))
    deltas = [d for c in chunks if c.choices for d in c.choices[0].delta.tool_calls or []]
    assert deltas[0].id and deltas[0].function and deltas[0].function.name == "get_weather"
    assert all(d.index == 0 and d.id is None for d in deltas[1:])
    streamed = "".join(d.function.arguments or "" for d in deltas if d.function)
    assert streamed == call.function.arguments  # greedy: the same tokens either way
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_required_tool_choice_returns_calls_of_the_given_tools(client: openai.OpenAI) -> None:
    choice = client.chat.completions.create(
        model=MODEL,
        messages=WEATHER_QUESTION,  # type: ignore[arg-type]
        temperature=0,
        max_tokens=96,
        tools=TOOLS,  # type: ignore[arg-type]
        tool_choice="required",
    ).choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls
    for call in choice.message.tool_calls:
        assert call.function.name in ("get_weather", "get_time")
        if call.function.name == "get_weather":
            assert schema_errors(json.loads(call.function.arguments), WEATHER_PARAMETERS) == []


def test_invalid_constraints_are_400s_naming_the_field(server: RunningServer) -> None:
    bad_schema = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "bogus"}}}
    results = post(
        server,
        [
            chat_body(response_format=bad_schema),
            chat_body(structured_outputs={"regex": "(unclosed"}),
            chat_body(response_format={"type": "json_object"}, structured_outputs={"choice": ["a"]}),
        ],
    )
    params = [body["error"]["param"] for _, body in results]
    assert [status for status, _ in results] == [400, 400, 400]
    assert params == ["response_format.json_schema.schema", "structured_outputs.regex", "structured_outputs"]
    assert "bogus" in results[0][1]["error"]["message"]


def test_legacy_completions_honour_a_choice(server: RunningServer) -> None:
    async def go() -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {server.api_key}"}
        body = {"model": MODEL, "prompt": "The sky is", "max_tokens": 8, "temperature": 0}
        body["structured_outputs"] = {"choice": [" blue", " green"]}
        async with aiohttp.ClientSession(headers=headers) as session:
            async with session.post(f"{server.base_url}/v1/completions", json=body) as response:
                return response.status, await response.json()

    status, body = asyncio.run(go())
    assert status == 200, body
    assert body["choices"][0]["text"] in (" blue", " green") and body["choices"][0]["finish_reason"] == "stop"
