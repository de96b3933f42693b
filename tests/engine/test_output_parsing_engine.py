"""Tool-call and reasoning parsing through the whole server path with the tiny random model.

A random model writes neither think blocks nor tool calls, so the output is forced: a `structured_outputs`
regex that matches exactly one text makes the engine emit it token by token, and the parsers see it
exactly as they would see a reasoning model's output (streamed in token-sized pieces). The tokenizer
here is character-level, so every character of the forced text is one token the 256-id model can emit.
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from jaxserve.engine.async_engine import AsyncEngine
from jaxserve.engine.runner import ModelRunner
from jaxserve.http.app import build_app
from jaxserve.http.parser_settings import ParserSettings
from jaxserve.modeling.tokenizer import Tokenizer

FORCED = '<think>Hm.</think>On it.\n<tool_call>{"name": "f", "arguments": {"q": [1, 2]}}</tool_call>'
TOOLS = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
SETTINGS = ParserSettings(tool_call_parser="hermes", enable_auto_tool_choice=True, reasoning_parser="qwen3")
VOCAB_SIZE = 256  # the tiny model's


def write_char_tokenizer(directory: Path) -> Path:
    """A byte-level tokenizer with one token per printable ASCII byte (and newline), no merges, and a
    plain chat template: every id fits the tiny model's vocabulary, EOS included."""
    from tokenizers import Tokenizer as BackendTokenizer
    from tokenizers import decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    pieces = ["<unk>", "<s>", "</s>"] + [byte_level_char(code) for code in [10, *range(32, 127)]]
    backend = BackendTokenizer(
        models.BPE(vocab={p: i for i, p in enumerate(pieces)}, merges=[], unk_token="<unk>")
    )
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    hf = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        chat_template="{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}assistant: ",
    )
    hf.save_pretrained(directory)
    return directory


def byte_level_char(code: int) -> str:
    """GPT-2's byte-level alphabet: printable bytes stand for themselves, the others are shifted by 256."""
    printable = 33 <= code <= 126 or 161 <= code <= 172 or 174 <= code <= 255
    if printable:
        return chr(code)
    shifted = [b for b in range(256) if not (33 <= b <= 126 or 161 <= b <= 172 or 174 <= b <= 255)]
    return chr(256 + shifted.index(code))


@pytest.fixture(scope="module")
def engine(tiny_runner: ModelRunner, tmp_path_factory: pytest.TempPathFactory) -> Any:
    tokenizer = Tokenizer.from_path(write_char_tokenizer(tmp_path_factory.mktemp("chars")))
    assert tokenizer.vocab_size <= VOCAB_SIZE
    engine = AsyncEngine(tiny_runner, tokenizer)
    engine.start()
    yield engine
    engine.shutdown()


def post(engine: AsyncEngine, body: dict[str, Any]) -> tuple[int, Any]:
    async def go() -> tuple[int, Any]:
        app = build_app(engine, served_model_names=["tiny"], parsers=SETTINGS)
        async with TestClient(TestServer(app)) as client:
            response = await client.post("/v1/chat/completions", json=body)
            raw = await response.read()
            if response.content_type == "text/event-stream":
                events = [line[len("data: ") :] for line in raw.decode().split("\n\n") if line]
                return response.status, [json.loads(event) for event in events if event != "[DONE]"]
            return response.status, json.loads(raw)

    return asyncio.run(go())


def request(**fields: Any) -> dict[str, Any]:
    return {
        "messages": [{"role": "user", "content": "Hi"}],
        "tools": TOOLS,
        "structured_outputs": {"regex": re.escape(FORCED)},
        "temperature": 0,
        "max_tokens": len(FORCED) + 1,  # the text, then EOS (the context is 128 tokens)
        **fields,
    }


def test_forced_reasoning_and_tool_call_are_parsed(engine: AsyncEngine) -> None:
    status, reply = post(engine, request())
    assert status == 200, reply
    choice = reply["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    message = choice["message"]
    assert message["reasoning"] == "Hm."
    assert message["content"] == "On it.\n"
    [call] = message["tool_calls"]
    assert call["function"] == {"name": "f", "arguments": '{"q": [1, 2]}'}
    assert reply["usage"]["completion_tokens"] == len(FORCED)


def test_streamed_token_by_token_the_deltas_add_up(engine: AsyncEngine) -> None:
    status, chunks = post(engine, request(stream=True))
    assert status == 200
    deltas = [chunk["choices"][0]["delta"] for chunk in chunks if chunk["choices"]]
    assert "".join(d.get("reasoning", "") for d in deltas) == "Hm."
    assert "".join(d.get("content", "") for d in deltas) == "On it.\n"
    calls = [call for d in deltas for call in d.get("tool_calls", [])]
    assert calls[0]["function"]["name"] == "f" and calls[0]["id"].startswith("call_")
    assert len(calls) > 5  # the arguments arrive in many pieces as the tokens do
    arguments = "".join(call["function"].get("arguments", "") for call in calls)
    assert arguments == '{"q": [1, 2]}'
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
