"""A request's output parsing: reasoning first, tool calls in the content after it, the request's
switches (include_reasoning, parallel_tool_calls), and the tool_choice checks against server flags."""

from __future__ import annotations

from typing import Any

import pytest

from jaxserve.errors import InvalidRequest
from jaxserve.http.parser_settings import ParserSettings
from jaxserve.http.protocol.chat_request import ChatCompletionRequest
from jaxserve.http.reasoning.registry import reasoning_parser
from jaxserve.http.tool_parsers.hermes import HermesToolStream
from jaxserve.http.translate.auto_tools import AUTO_NEEDS_FLAGS, check_tool_choice, without_excluded_tools
from jaxserve.http.translate.output_parsing import (
    MessageDelta,
    OutputParsing,
    ParsedMessage,
    output_parsing,
    to_delta_message,
)
from jaxserve.modeling.default_model import default_model_path
from jaxserve.modeling.tokenizer import Tokenizer
from tests.http.tool_parsers.streaming import splits

TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
CALL = '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>'
SERVING = ParserSettings(tool_call_parser="hermes", enable_auto_tool_choice=True, reasoning_parser="qwen3")


def chat(**fields: Any) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate({"messages": [{"role": "user", "content": "hi"}], **fields})


def parsing(**options: Any) -> OutputParsing:
    return OutputParsing(tools=HermesToolStream, reasoning=reasoning_parser("qwen3"), **options)


def streamed(parse: OutputParsing, pieces: list[str]) -> tuple[ParsedMessage, bool]:
    stream = parse.choice_stream()
    total = MessageDelta()
    for piece in pieces:
        total.extend(stream.feed(piece))
    total.extend(stream.finish())
    names = [c.name for c in total.tool_calls if c.name]
    arguments: dict[int, str] = {}
    for call in total.tool_calls:
        arguments[call.index] = arguments.get(call.index, "") + call.arguments
    message = ParsedMessage(
        content=total.content or None,
        reasoning=total.reasoning or None,
        tool_calls=[],  # compared by name and arguments below
    )
    assert len(names) == len(arguments)
    return message, stream.tools_called


def test_tool_calls_are_read_from_the_content_after_reasoning() -> None:
    text = f"<think>Maybe {CALL} is right?</think>\nChecking.\n{CALL}"
    parsed = parsing().parse(text)
    assert parsed.reasoning == f"Maybe {CALL} is right?"
    assert parsed.content == "\nChecking.\n"
    assert [(c.name, c.arguments) for c in parsed.tool_calls] == [("get_weather", '{"city": "Paris"}')]
    for pieces in splits(text):
        message, tools_called = streamed(parsing(), pieces)
        assert (message.content, message.reasoning, tools_called) == (parsed.content, parsed.reasoning, True)


def test_parallel_tool_calls_false_keeps_the_first_call() -> None:
    text = CALL + CALL.replace("Paris", "Rome")
    parsed = parsing(parallel_tool_calls=False).parse(text)
    assert [c.arguments for c in parsed.tool_calls] == ['{"city": "Paris"}']
    stream = parsing(parallel_tool_calls=False).choice_stream()
    delta = stream.feed(text)
    delta.extend(stream.finish())
    assert {c.index for c in delta.tool_calls} == {0}


def test_include_reasoning_false_drops_the_reasoning() -> None:
    text = "<think>secret</think>answer"
    assert parsing(include_reasoning=False).parse(text) == ParsedMessage("answer", None, [])
    stream = parsing(include_reasoning=False).choice_stream()
    assert stream.feed("<think>sec").reasoning == ""
    assert stream.feed("ret</think>answer").content == "answer"


def test_delta_message_has_only_the_keys_with_text() -> None:
    parse = parsing()
    stream = parse.choice_stream()
    first = to_delta_message(stream.feed('<think>hm</think>ok<tool_call>{"name": "get_weather", "argu'))
    assert first.model_dump(exclude_unset=True, mode="json") == {
        "content": "ok",
        "reasoning": "hm",
        "reasoning_content": "hm",
        "tool_calls": [
            {
                "index": 0,
                "id": first.tool_calls[0].id if first.tool_calls else None,
                "type": "function",
                "function": {"name": "get_weather", "arguments": ""},
            }
        ],
    }
    second = to_delta_message(stream.feed('ments": {"a": 1}}</tool_call>'))
    assert second.model_dump(exclude_unset=True, mode="json") == {
        "tool_calls": [{"index": 0, "function": {"arguments": '{"a": 1}'}}]
    }


@pytest.mark.parametrize(
    "fields", [{"tools": TOOLS}, {"tools": TOOLS, "tool_choice": "auto"}], ids=["default", "explicit"]
)
def test_auto_needs_the_server_flags(fields: dict[str, Any]) -> None:
    with pytest.raises(InvalidRequest) as caught:
        check_tool_choice(chat(**fields), ParserSettings())
    assert (caught.value.message, caught.value.param) == (AUTO_NEEDS_FLAGS, "tool_choice")
    with pytest.raises(InvalidRequest):
        check_tool_choice(chat(**fields), ParserSettings(tool_call_parser="hermes"))
    check_tool_choice(chat(**fields), SERVING)


def test_none_needs_no_flags_and_parses_nothing() -> None:
    request = chat(tools=TOOLS, tool_choice="none")
    check_tool_choice(request, ParserSettings())
    tokenizer = Tokenizer.from_path(default_model_path())
    parse = output_parsing(request, SERVING, tokenizer, [1, 2])
    assert parse is not None and parse.tools is None and parse.reasoning is not None
    assert output_parsing(request, ParserSettings(tool_call_parser="hermes"), tokenizer, [1]) is None


def test_exclude_tools_when_tool_choice_none() -> None:
    settings = ParserSettings(exclude_tools_when_tool_choice_none=True)
    assert without_excluded_tools(chat(tools=TOOLS, tool_choice="none"), settings).tools is None
    assert without_excluded_tools(chat(tools=TOOLS, tool_choice="none"), ParserSettings()).tools
    assert without_excluded_tools(chat(tools=TOOLS), settings).tools  # "auto" by default


def test_server_settings_are_validated() -> None:
    with pytest.raises(ValueError, match="requires --tool-call-parser"):
        ParserSettings(enable_auto_tool_choice=True)
    with pytest.raises(ValueError, match="unknown tool-call parser"):
        ParserSettings(tool_call_parser="nope")
    with pytest.raises(ValueError, match="unknown reasoning parser"):
        ParserSettings(reasoning_parser="nope")
