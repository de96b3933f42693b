"""The mistral parser: `[TOOL_CALLS]` then a JSON array of calls; nine-character ids."""

from __future__ import annotations

import pytest

from jaxserve.http.tool_parsers.mistral import MistralToolStream
from tests.http.tool_parsers.streaming import assert_stream_matches_whole, whole


def test_array_of_calls_after_text() -> None:
    text = 'Sure.[TOOL_CALLS] [{"name": "f", "arguments": {"x": 1}}, {"name": "g", "arguments": {}}]'
    result = assert_stream_matches_whole(MistralToolStream, text)
    assert result.content == "Sure."
    assert [(c.name, c.arguments) for c in result.tool_calls] == [("f", '{"x": 1}'), ("g", "{}")]


def test_single_object_and_unclosed_array() -> None:
    one = assert_stream_matches_whole(MistralToolStream, '[TOOL_CALLS]{"name": "f", "arguments": {"a": "b"}}')
    assert one.content is None and [c.name for c in one.tool_calls] == ["f"]
    unclosed = assert_stream_matches_whole(MistralToolStream, '[TOOL_CALLS][{"name": "f", "arguments": {}}')
    assert [c.name for c in unclosed.tool_calls] == ["f"]


def test_ids_are_nine_alphanumerics() -> None:
    stream = MistralToolStream()
    stream.feed('[TOOL_CALLS][{"name": "f", "arguments": {}}]')
    stream.finish()
    [call] = stream.tool_calls
    assert len(call.id) == 9 and call.id.isalnum()


@pytest.mark.parametrize("text", ["No calls.", "[TOOL", "[TOOL_CALLS] nonsense", '[TOOL_CALLS][{"name": 1}]'])
def test_no_valid_calls_is_all_content(text: str) -> None:
    result = whole(MistralToolStream, text)
    assert result.tool_calls == [] and result.content == text
