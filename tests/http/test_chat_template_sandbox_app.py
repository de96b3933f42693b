"""A request's own chat_template through the real application: hostile templates are a 400 error object on
`param: chat_template`, and the next request is served.

The engine is the replaying stand-in of test_tool_reasoning_app (templates render before any engine call);
the tokenizer and its template sandbox are real.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from jaxserve.http.app import build_app
from jaxserve.modeling.default_model import default_model_path
from jaxserve.modeling.template_sandbox import SandboxLimits, TemplateSandbox
from jaxserve.modeling.tokenizer import Tokenizer
from tests.http.test_tool_reasoning_app import TextEngine

LIMITS = SandboxLimits(timeout_seconds=1.0, max_output_chars=50_000)
DID_NOT_HANG_SECONDS = LIMITS.timeout_seconds + 30
MESSAGES = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def tokenizer() -> Iterator[Tokenizer]:
    tokenizer = Tokenizer.from_path(default_model_path())
    tokenizer.use_template_sandbox(TemplateSandbox(LIMITS))
    yield tokenizer
    tokenizer.close()


def post_all(engine: TextEngine, requests: list[tuple[str, dict[str, Any]]]) -> list[tuple[int, Any]]:
    """Send the requests one after another to one app; return each status and JSON body."""

    async def run() -> list[tuple[int, Any]]:
        app = build_app(engine, served_model_names=["smol"])  # type: ignore[arg-type]
        replies = []
        async with TestClient(TestServer(app)) as client:
            for path, body in requests:
                response = await client.post(path, json=body)
                replies.append((response.status, json.loads(await response.read())))
        return replies

    return asyncio.run(run())


@pytest.mark.parametrize(
    ("template", "limit"),
    [
        ("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}", "time limit"),
        ("{{ 'a' * 10**10 }}", "memory limit"),
        ("{% for i in range(1000) %}{{ 'x' * 1000 }}{% endfor %}", "output size limit"),
        ("{{ cycler.__init__.__globals__.os.popen('id').read() }}", "templates may not use"),
        ("{% include '/etc/passwd' %}", "cannot load files"),
    ],
    ids=["time", "memory", "output", "escape", "include"],
)
@pytest.mark.parametrize("path", ["/v1/chat/completions", "/tokenize"])
def test_a_hostile_chat_template_is_a_400_and_the_server_keeps_serving(
    tokenizer: Tokenizer, path: str, template: str, limit: str
) -> None:
    engine = TextEngine(tokenizer, ["ok"])
    started = time.monotonic()
    (status, body), (next_status, next_body) = post_all(
        engine,
        [
            (path, {"messages": MESSAGES, "chat_template": template}),
            (path, {"messages": MESSAGES, "chat_template": "<{{ messages[0]['content'] }}>"}),
        ],
    )
    assert time.monotonic() - started < DID_NOT_HANG_SECONDS
    assert status == 400
    error = body["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == "chat_template"
    assert limit in error["message"]
    assert next_status == 200
    if path == "/tokenize":
        assert tokenizer.decode(next_body["tokens"]) == "<hi>"
    else:
        assert next_body["choices"][0]["message"]["content"] == "ok"
        assert [tokenizer.decode(p) for p in engine.prompts] == ["<hi>"]


def test_the_models_own_template_sent_as_chat_template_counts_the_same_tokens(tokenizer: Tokenizer) -> None:
    engine = TextEngine(tokenizer, ["ok"])
    conversation = [{"role": "system", "content": "Be brief."}, *MESSAGES]
    (_, own), (_, sent) = post_all(
        engine,
        [
            ("/tokenize", {"messages": conversation}),
            ("/tokenize", {"messages": conversation, "chat_template": tokenizer.chat_template}),
        ],
    )
    assert sent["tokens"] == own["tokens"]
    assert tokenizer.template_sandbox.worker_pids()  # the request's copy went through the sandbox
