"""Request fields beyond sampling, each checked by its effect through the real server."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest

from jaxserve.modeling.default_model import default_model_path
from jaxserve.modeling.tokenizer import Tokenizer
from tests.e2e.conftest import RunningServer

MODEL = "SmolLM2-135M-Instruct"
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    return Tokenizer.from_path(default_model_path())


def chat(
    server: RunningServer, headers: dict[str, str] | None = None, **fields: Any
) -> tuple[int, dict, Any]:
    body = {"model": MODEL, "messages": QUESTION, "max_tokens": 8, "temperature": 0, **fields}

    async def go() -> tuple[int, Any, Any]:
        merged = {"Authorization": f"Bearer {server.api_key}", **(headers or {})}
        async with aiohttp.ClientSession(headers=merged) as session:
            async with session.post(f"{server.base_url}/v1/chat/completions", json=body) as r:
                return r.status, r.headers.copy(), await r.json()

    return asyncio.run(go())


def test_return_token_ids_gives_prompt_and_completion_ids(
    server: RunningServer, tokenizer: Tokenizer
) -> None:
    status, _, body = chat(server, return_token_ids=True)
    assert status == 200
    assert body["prompt_token_ids"] == tokenizer.apply_chat_template(QUESTION, add_generation_prompt=True)
    ids = body["choices"][0]["token_ids"]
    assert len(ids) == body["usage"]["completion_tokens"]
    assert tokenizer.decode(ids, skip_special_tokens=True) == body["choices"][0]["message"]["content"]


def test_truncate_prompt_tokens_keeps_the_last_tokens(server: RunningServer, tokenizer: Tokenizer) -> None:
    status, _, body = chat(server, truncate_prompt_tokens=5, return_token_ids=True)
    assert status == 200
    full = tokenizer.apply_chat_template(QUESTION, add_generation_prompt=True)
    assert body["prompt_token_ids"] == full[-5:] and body["usage"]["prompt_tokens"] == 5
    status, _, body = chat(server, truncate_prompt_tokens=100000)
    assert status == 400 and body["error"]["param"] == "truncate_prompt_tokens"


def test_echo_prepends_the_continued_message(server: RunningServer) -> None:
    messages = [*QUESTION, {"role": "assistant", "content": "The capital of France is"}]
    status, _, body = chat(
        server, messages=messages, add_generation_prompt=False, continue_final_message=True, echo=True
    )
    assert status == 200
    content = body["choices"][0]["message"]["content"]
    assert content.startswith("The capital of France is") and len(content) > len("The capital of France is")
    assert body["choices"][0]["message"]["role"] == "assistant"


def test_request_id_header_round_trips(server: RunningServer) -> None:
    status, headers, body = chat(server, headers={"X-Request-Id": "abc-123"})
    assert status == 200 and body["id"] == "chatcmpl-abc-123" and headers["X-Request-Id"] == "abc-123"
    status, _, body = chat(server, request_id="from-body")
    assert status == 200 and body["id"] == "chatcmpl-from-body"


def test_vllm_xargs_and_user_are_accepted(server: RunningServer) -> None:
    status, _, body = chat(server, vllm_xargs={"experiment": "a", "n": 1}, user="someone")
    assert status == 200 and body["choices"][0]["message"]["content"]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("kv_transfer_params", {"do_remote_prefill": True}),
        ("mm_processor_kwargs", {"fps": 2}),
        ("logits_processors", ["my.Processor"]),
    ],
)
def test_fields_meaningless_here_are_refused_with_a_reason(
    server: RunningServer, field: str, value: Any
) -> None:
    status, _, body = chat(server, **{field: value})
    assert status == 400 and body["error"]["param"] == field
    assert "not supported by this server yet" not in body["error"]["message"]


def test_tool_call_history_renders_through_the_template(server: RunningServer, tokenizer: Tokenizer) -> None:
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
    }
    messages = [
        {"role": "user", "content": "What is the weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "content": '{"temperature": 21}', "tool_call_id": "call_1"},
    ]
    status, _, body = chat(server, messages=messages, return_token_ids=True)
    assert status == 200, body
    expected = tokenizer.apply_chat_template(
        [messages[0], {"role": "assistant", "content": "", "tool_calls": [call]}, messages[2]],
        add_generation_prompt=True,
    )
    assert body["prompt_token_ids"] == expected
