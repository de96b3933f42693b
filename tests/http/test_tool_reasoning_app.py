"""Tool calls (tool_choice auto/none) and reasoning through the real application, over an engine that
replays a fixed text piece by piece: the response's message parts, finish_reason, ids, the streamed
deltas, and the 400s vLLM gives when the server lacks the flags.

The engine is a stand-in (tests/engine/test_output_parsing_engine.py runs the real one); the tokenizer
and chat template are the default model's.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from jaxserve.engine.outputs import RequestOutput
from jaxserve.http.app import build_app
from jaxserve.http.parser_settings import ParserSettings
from jaxserve.modeling.default_model import default_model_path
from jaxserve.modeling.tokenizer import Tokenizer
from jaxserve.sampling.params import SamplingParams

CHAT = "/v1/chat/completions"
MESSAGES = [{"role": "user", "content": "Weather in Paris?"}]
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]
THINK = "<think>The user wants weather.</think>"
CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
PIECES = ["<thi", "nk>The user ", "wants weather.</th", "ink>Let me", " check.\n<tool", "_call>\n{\"name\": ",
          '"get_weather", "argu', 'ments": {"city": "Pa', 'ris"}}\n</tool_call>']  # fmt: skip
FULL_SERVER = ParserSettings(
    tool_call_parser="hermes", enable_auto_tool_choice=True, reasoning_parser="qwen3"
)


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    return Tokenizer.from_path(default_model_path())


@dataclass
class TextEngine:
    """Replays `pieces` as one output each (token ids 1000, 1001, ...), then finishes with "stop"."""

    tokenizer: Tokenizer
    pieces: list[str]
    max_model_len: int = 2048
    params: list[SamplingParams] = field(default_factory=list)
    prompts: list[list[int]] = field(default_factory=list)

    def is_healthy(self) -> bool:
        return True

    async def generate(
        self,
        request_id: str,
        prompt_token_ids: list[int],
        params: SamplingParams,
        *,
        priority: int = 0,
        cache_salt: str | None = None,
    ) -> AsyncIterator[RequestOutput]:
        self.params.append(params)
        self.prompts.append(list(prompt_token_ids))
        text, tokens = "", ()
        for t, piece in enumerate(self.pieces):
            text += piece
            tokens += (1000 + t,)
            done = t == len(self.pieces) - 1
            yield RequestOutput(
                request_id=request_id,
                prompt_token_ids=tuple(prompt_token_ids),
                text=text,
                token_ids=tokens,
                delta_text=piece,
                delta_token_ids=(1000 + t,),
                finished=done,
                finish_reason="stop" if done else None,
            )


def post(engine: TextEngine, body: dict[str, Any], parsers: ParserSettings = FULL_SERVER) -> tuple[int, Any]:
    async def run() -> tuple[int, Any]:
        app = build_app(engine, served_model_names=["smol"], parsers=parsers)  # type: ignore[arg-type]
        async with TestClient(TestServer(app)) as client:
            response = await client.post(CHAT, json=body)
            raw = await response.read()
            if response.content_type == "text/event-stream":
                events = [line[len("data: ") :] for line in raw.decode().split("\n\n") if line]
                assert events[-1] == "[DONE]"
                return response.status, [json.loads(event) for event in events[:-1]]
            return response.status, json.loads(raw)

    return asyncio.run(run())


def test_reasoning_content_and_tool_calls_in_one_message(tokenizer: Tokenizer) -> None:
    engine = TextEngine(tokenizer, PIECES)
    status, reply = post(engine, {"messages": MESSAGES, "tools": TOOLS})
    assert status == 200
    assert engine.params[0].skip_special_tokens is False  # tags may be special tokens (vLLM)
    choice = reply["choices"][0]
    message = choice["message"]
    assert message["reasoning"] == message["reasoning_content"] == "The user wants weather."
    assert message["content"] == "Let me check.\n"
    [call] = message["tool_calls"]
    assert re.fullmatch(r"call_[0-9a-f]{24}", call["id"])
    assert call["type"] == "function"
    assert call["function"] == {"name": "get_weather", "arguments": '{"city": "Paris"}'}
    assert choice["finish_reason"] == "tool_calls"


def test_streamed_deltas_add_up_to_the_message(tokenizer: Tokenizer) -> None:
    engine = TextEngine(tokenizer, PIECES)
    status, chunks = post(engine, {"messages": MESSAGES, "tools": TOOLS, "stream": True})
    assert status == 200
    deltas = [chunk["choices"][0]["delta"] for chunk in chunks]
    assert deltas[0] == {"role": "assistant", "content": ""}
    reasoning = "".join(d.get("reasoning", "") for d in deltas)
    assert reasoning == "".join(d.get("reasoning_content", "") for d in deltas) == "The user wants weather."
    assert "".join(d.get("content", "") for d in deltas) == "Let me check.\n"
    calls = [call for d in deltas for call in d.get("tool_calls", [])]
    assert calls[0]["function"]["name"] == "get_weather" and calls[0]["type"] == "function"
    assert all("id" not in call and "name" not in call["function"] for call in calls[1:])
    arguments = "".join(call["function"].get("arguments", "") for call in calls)
    assert json.loads(arguments) == {"city": "Paris"}
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
    assert all("<think>" not in json.dumps(d) and "tool_call>" not in json.dumps(d) for d in deltas)


def test_tool_choice_none_parses_nothing(tokenizer: Tokenizer) -> None:
    body = {"messages": MESSAGES, "tools": TOOLS, "tool_choice": "none", "include_reasoning": False}
    engine = TextEngine(tokenizer, PIECES)
    status, reply = post(engine, body)
    assert status == 200
    message = reply["choices"][0]["message"]
    assert message["content"] == "Let me check.\n" + CALL
    assert message["tool_calls"] == [] and message["reasoning"] is None
    assert engine.params[0].skip_special_tokens is True  # nothing is parsed, nothing is kept
    assert reply["choices"][0]["finish_reason"] == "stop"


@pytest.mark.parametrize("fields", [{}, {"tool_choice": "auto"}], ids=["default", "explicit"])
def test_auto_without_the_flags_is_a_400(tokenizer: Tokenizer, fields: dict[str, Any]) -> None:
    engine = TextEngine(tokenizer, PIECES)
    status, reply = post(engine, {"messages": MESSAGES, "tools": TOOLS, **fields}, parsers=ParserSettings())
    assert status == 400
    assert reply["error"]["param"] == "tool_choice"
    assert reply["error"]["message"] == (
        '"auto" tool choice requires --enable-auto-tool-choice and --tool-call-parser to be set'
    )
    assert engine.params == []


def test_no_tools_means_no_tool_parsing(tokenizer: Tokenizer) -> None:
    status, reply = post(TextEngine(tokenizer, [CALL]), {"messages": MESSAGES})
    assert status == 200 and reply["choices"][0]["message"]["content"] == CALL


def test_parallel_tool_calls_false_returns_one_call(tokenizer: Tokenizer) -> None:
    engine = TextEngine(tokenizer, [CALL, CALL.replace("Paris", "Rome")])
    body = {"messages": MESSAGES, "tools": TOOLS, "parallel_tool_calls": False}
    status, reply = post(engine, body)
    assert [c["function"]["arguments"] for c in reply["choices"][0]["message"]["tool_calls"]] == [
        '{"city": "Paris"}'
    ]
    status, chunks = post(engine, {**body, "stream": True})
    indexes = {c["index"] for chunk in chunks for c in chunk["choices"][0]["delta"].get("tool_calls", [])}
    assert indexes == {0}


def test_exclude_tools_when_tool_choice_none(tokenizer: Tokenizer) -> None:
    template = "{% if tools %}TOOLS: {{ tools | tojson }}{% endif %}{% for m in messages %}{{ m.content }}{% endfor %}"
    body = {"messages": MESSAGES, "tools": TOOLS, "tool_choice": "none", "chat_template": template}
    engine = TextEngine(tokenizer, ["ok"])
    post(engine, body)
    post(engine, body, parsers=ParserSettings(exclude_tools_when_tool_choice_none=True))
    with_tools, without = (tokenizer.decode(p) for p in engine.prompts)
    assert with_tools.startswith("TOOLS:") and without == "Weather in Paris?"


def test_reasoning_effort_reaches_the_template(tokenizer: Tokenizer) -> None:
    template = "effort={{ reasoning_effort }}"
    engine = TextEngine(tokenizer, ["ok"])
    post(engine, {"messages": MESSAGES, "reasoning_effort": "high", "chat_template": template})
    assert tokenizer.decode(engine.prompts[0]) == "effort=high"


def test_special_token_markers_are_kept_for_the_parser(tokenizer: Tokenizer) -> None:
    engine = TextEngine(tokenizer, ['[TOOL_CALLS][{"name": "get_weather", "arguments": {}}]'])
    mistral = ParserSettings(tool_call_parser="mistral", enable_auto_tool_choice=True)
    status, reply = post(engine, {"messages": MESSAGES, "tools": TOOLS}, parsers=mistral)
    assert status == 200 and engine.params[0].skip_special_tokens is False
    [call] = reply["choices"][0]["message"]["tool_calls"]
    assert len(call["id"]) == 9 and call["function"]["arguments"] == "{}"
