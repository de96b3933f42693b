"""Helpers: run a tool-call parser over pieces of a text and compare with the whole-text result."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from jaxserve.http.tool_parsers.base import ExtractedToolCalls, ToolCallStream, extract_tool_calls


@dataclass
class Streamed:
    """A stream's deltas put together the way a client does."""

    content: str = ""
    calls: dict[int, dict[str, str]] = field(default_factory=dict)
    headers: list[int] = field(default_factory=list)  # call indexes in the order their headers came

    def as_pairs(self) -> list[tuple[str, str]]:
        return [(call["name"], call["arguments"]) for _, call in sorted(self.calls.items())]


def counter_ids() -> Callable[[], str]:
    numbers = iter(range(1_000_000))
    return lambda: f"call-{next(numbers)}"


def run_stream(parser: type[ToolCallStream], pieces: list[str]) -> tuple[Streamed, ToolCallStream]:
    stream = parser(counter_ids())
    result = Streamed()
    for delta in [stream.feed(piece) for piece in pieces] + [stream.finish()]:
        result.content += delta.content
        for call in delta.tool_calls:
            if call.id is not None:
                assert call.index not in result.calls, "a call's header comes once"
                assert call.name, "the header names the function"
                result.headers.append(call.index)
                result.calls[call.index] = {"id": call.id, "name": call.name, "arguments": ""}
            else:
                assert call.index in result.calls, "argument text comes after the call's header"
            result.calls[call.index]["arguments"] += call.arguments
    return result, stream


def whole(parser: type[ToolCallStream], text: str) -> ExtractedToolCalls:
    return extract_tool_calls(parser(counter_ids()), text)


def splits(text: str, seed: int = 0) -> Iterator[list[str]]:
    """Every split into two pieces, one character at a time, and random token-sized pieces."""
    for cut in range(len(text) + 1):
        yield [text[:cut], text[cut:]]
    yield list(text)
    rng = random.Random(seed)
    for _ in range(20):
        pieces, start = [], 0
        while start < len(text):
            size = rng.randint(1, 6)
            pieces.append(text[start : start + size])
            start += size
        yield pieces


def assert_stream_matches_whole(parser: type[ToolCallStream], text: str) -> ExtractedToolCalls:
    """However the text is cut, the stream's deltas add up to the whole-text result."""
    expected = whole(parser, text)
    for pieces in splits(text):
        streamed, stream = run_stream(parser, pieces)
        assert not stream.failed
        assert streamed.content == (expected.content or ""), pieces
        assert streamed.as_pairs() == [(c.name, c.arguments) for c in expected.tool_calls], pieces
        assert streamed.headers == sorted(streamed.headers)
    return expected
