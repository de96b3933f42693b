"""A hostile request chat_template against the real server: a 400 on `chat_template`, and the server goes on
answering chats."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp

from jaxserve.modeling.default_model import default_model_path
from jaxserve.modeling.template_sandbox import SandboxLimits
from jaxserve.modeling.tokenizer import Tokenizer
from tests.e2e.conftest import RunningServer

MODEL = "SmolLM2-135M-Instruct"
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
NESTED_LOOPS = "{% for i in range(100000) %}{% for j in range(100000) %}{{ j }}{% endfor %}{% endfor %}"


def chat(server: RunningServer, **fields: Any) -> tuple[int, Any]:
    body = {"model": MODEL, "messages": QUESTION, "max_tokens": 4, "temperature": 0, **fields}

    async def go() -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {server.api_key}"}
        async with aiohttp.ClientSession(headers=headers) as session:
            async with session.post(f"{server.base_url}/v1/chat/completions", json=body) as r:
                return r.status, await r.json()

    return asyncio.run(go())


def test_a_runaway_chat_template_is_a_400_and_the_next_chat_succeeds(server: RunningServer) -> None:
    started = time.monotonic()
    status, body = chat(server, chat_template=NESTED_LOOPS)
    # The first request-supplied template also starts the sandbox worker (imports take seconds).
    assert time.monotonic() - started < SandboxLimits().timeout_seconds + 60
    assert status == 400
    assert body["error"]["param"] == "chat_template"
    assert "time limit" in body["error"]["message"]

    status, body = chat(server)
    assert status == 200
    assert body["choices"][0]["message"]["content"]
    status, body = chat(server, chat_template="{{ messages[0]['content'] }}")
    assert status == 200
    question = Tokenizer.from_path(default_model_path()).encode(
        QUESTION[0]["content"], add_special_tokens=False
    )
    assert body["usage"]["prompt_tokens"] == len(question)  # the question alone, as the template says
