"""The llama3_json parser: JSON calls (optionally after <|python_tag|>, `;`-separated) or plain text."""

from __future__ import annotations

import pytest

from jaxserve.http.tool_parsers.llama3_json import Llama3JsonToolStream
from tests.http.tool_parsers.streaming import assert_stream_matches_whole, run_stream, whole


def test_python_tag_and_two_calls() -> None:
    text = '<|python_tag|>{"name": "f", "parameters": {"x": 1}}; {"name": "g", "parameters": {"y": "z"}}'
    result = assert_stream_matches_whole(Llama3JsonToolStream, text)
    assert result.content is None
    assert [(c.name, c.arguments) for c in result.tool_calls] == [("f", '{"x": 1}'), ("g", '{"y": "z"}')]


def test_bare_json_with_arguments_key() -> None:
    result = assert_stream_matches_whole(Llama3JsonToolStream, '\n{"name": "f", "arguments": {"a": [true]}}')
    assert [(c.name, c.arguments) for c in result.tool_calls] == [("f", '{"a": [true]}')]


def test_parameters_win_when_first() -> None:
    text = '{"name": "f", "parameters": {"a": 1}, "arguments": {"b": 2}}'
    assert whole(Llama3JsonToolStream, text).tool_calls[0].arguments == '{"a": 1}'


@pytest.mark.parametrize("text", ["The answer is 4.", "", "  ", "<|python", 'I\'d call {"name": "f"}'])
def test_text_not_starting_with_a_call_is_content(text: str) -> None:
    result = assert_stream_matches_whole(Llama3JsonToolStream, text)
    assert result.tool_calls == [] and result.content == text


@pytest.mark.parametrize(
    "text",
    [
        '{"name": "f", "parameters": {}} and more',
        "{not json}",
        '{"name": "f", "parameters": {',
        "<|python_tag|>",
    ],
)
def test_malformed_output_is_all_content(text: str) -> None:
    result = whole(Llama3JsonToolStream, text)
    assert result.tool_calls == [] and result.content == text


def test_a_stream_sends_the_name_before_the_arguments_end() -> None:
    streamed, _ = run_stream(Llama3JsonToolStream, ['{"name": "f", "parameters": {"x"', ": 1}}"])
    assert streamed.calls[0]["name"] == "f" and streamed.calls[0]["arguments"] == '{"x": 1}'
