"""The hermes parser (`<tool_call>{...}</tool_call>`): whole responses as vLLM reads them, and streams
that add up to the same result wherever the text is cut."""

from __future__ import annotations

import json

import pytest

from jaxserve.http.tool_parsers.hermes import HermesToolStream
from tests.http.tool_parsers.streaming import assert_stream_matches_whole, run_stream, whole

WEATHER = '{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}'


def test_one_call_after_text() -> None:
    text = f"Let me check.\n<tool_call>\n{WEATHER}\n</tool_call>"
    result = assert_stream_matches_whole(HermesToolStream, text)
    assert result.content == "Let me check.\n"
    [call] = result.tool_calls
    assert call.name == "get_weather"
    assert json.loads(call.arguments) == {"city": "Paris", "unit": "celsius"}
    assert call.arguments == '{"city": "Paris", "unit": "celsius"}'


def test_only_calls_have_null_content() -> None:
    text = f'<tool_call>\n{WEATHER}\n</tool_call>\n<tool_call>\n{{"name": "now", "arguments": {{}}}}\n</tool_call>\n'
    result = assert_stream_matches_whole(HermesToolStream, text)
    assert result.content is None
    assert [c.name for c in result.tool_calls] == ["get_weather", "now"]
    assert result.tool_calls[1].arguments == "{}"
    assert len({c.id for c in result.tool_calls}) == 2


def test_text_after_the_calls_is_content() -> None:
    text = f"<tool_call>{WEATHER}</tool_call>\nI asked for the weather."
    result = assert_stream_matches_whole(HermesToolStream, text)
    assert result.content == "\nI asked for the weather."


def test_unclosed_last_call_counts() -> None:
    """vLLM's `<tool_call>(.*)` alternative: the model stopped after the object."""
    result = assert_stream_matches_whole(HermesToolStream, f"<tool_call>{WEATHER}\n</tool")
    assert [c.name for c in result.tool_calls] == ["get_weather"]


def test_arguments_before_name_and_extra_keys() -> None:
    text = '<tool_call>{"arguments": {"q": [1, 2]}, "id": 7, "name": "search"}</tool_call>'
    result = assert_stream_matches_whole(HermesToolStream, text)
    assert [(c.name, c.arguments) for c in result.tool_calls] == [("search", '{"q": [1, 2]}')]


def test_a_call_without_arguments_gets_an_empty_object() -> None:
    result = assert_stream_matches_whole(HermesToolStream, '<tool_call>{"name": "now"}</tool_call>')
    assert result.tool_calls[0].arguments == "{}"


def test_tags_inside_argument_strings_are_data() -> None:
    text = '<tool_call>{"name": "echo", "arguments": {"s": "</tool_call> <tool_call>"}}</tool_call>'
    result = assert_stream_matches_whole(HermesToolStream, text)
    assert json.loads(result.tool_calls[0].arguments) == {"s": "</tool_call> <tool_call>"}


@pytest.mark.parametrize("text", ["Plain answer.", "", "a < b and <tool", "<tool_c", "  \n"])
def test_text_without_calls_is_all_content(text: str) -> None:
    result = assert_stream_matches_whole(HermesToolStream, text)
    assert result.tool_calls == [] and result.content == text


@pytest.mark.parametrize(
    "text",
    [
        '<tool_call>{"name": get_weather}</tool_call>',
        "<tool_call>not json</tool_call>",
        '<tool_call>{"arguments": {}}</tool_call>',  # no name
        '<tool_call>{"name": "f", "arguments": {"a": 1}}</tool_cal>',
        '<tool_call>{"name": "f", "arguments": {"a": ',  # truncated
    ],
)
def test_malformed_calls_make_the_whole_text_content(text: str) -> None:
    result = whole(HermesToolStream, "Before. " + text)
    assert result.tool_calls == [] and result.content == "Before. " + text


def test_a_stream_sends_a_broken_call_as_content() -> None:
    text = "Hi <tool_call>{oops}</tool_call> bye"
    streamed, stream = run_stream(HermesToolStream, list(text))
    assert stream.failed
    assert streamed.content == text and streamed.calls == {}


def test_held_back_text_waits_for_the_tag_to_be_decided() -> None:
    stream = HermesToolStream()
    assert stream.feed("Sure <tool").content == "Sure "
    assert stream.feed("box>").content == "<toolbox>"
    header = stream.feed(f"\n<tool_call>{WEATHER[:42]}")
    assert header.content == "\n"  # the run before the call has text, so it is kept whole
    [delta] = header.tool_calls
    assert (delta.index, delta.name, delta.arguments) == (0, "get_weather", '{"cit')
    assert delta.id is not None and delta.id.startswith("call_")
    rest = stream.feed(WEATHER[42:] + "</tool_call>")
    assert [d.arguments for d in rest.tool_calls] == ['y": "Paris", "unit": "celsius"}']
    assert rest.tool_calls[0].id is None
