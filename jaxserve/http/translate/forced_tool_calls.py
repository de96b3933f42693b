"""The output of a forced tool choice -> `message.tool_calls` (whole, or as streamed deltas).

vLLM's shapes (`OpenAIServingChat`): the message's `content` is "" and `tool_calls` holds the calls,
each with a fresh id, type "function" and its arguments as a JSON string. A named function's output is
its arguments verbatim and the finish_reason stays the engine's ("stop", as OpenAI reports named calls);
"required" output is a JSON array of `{"name", "parameters"}` objects whose parameters are re-serialised
(`json.dumps`, non-ASCII kept), and finish_reason "stop" becomes "tool_calls". Output cut short by
max_tokens keeps finish_reason "length": a named call's arguments are then the truncated text, and an
unfinished "required" array is returned as plain content with no tool calls.

Streamed: a named call sends its id, type and name with the first piece of arguments, then the rest of
the arguments as they arrive; a "required" call is sent once its array element is complete (name, id and
arguments in one delta, so the streamed arguments equal the non-streamed ones), numbered by `index`.
"""

from __future__ import annotations

import json
from typing import Any

from jaxserve.http.protocol.chat_response import ChatMessage, FunctionCallOutput, ToolCall
from jaxserve.http.protocol.chat_stream import DeltaFunctionCall, DeltaToolCall
from jaxserve.http.tool_parsers.base import random_tool_call_id
from jaxserve.http.translate.forced_tools import ForcedToolChoice


def tool_call_message(
    role: str, text: str, finish_reason: str | None, forced: ForcedToolChoice
) -> tuple[ChatMessage, str | None]:
    """The response message for a forced tool choice's output, and the choice's finish_reason."""
    if forced.name is not None:
        call = ToolCall(
            id=random_tool_call_id(), function=FunctionCallOutput(name=forced.name, arguments=text)
        )
        return ChatMessage(role=role, content="", tool_calls=[call]), finish_reason
    calls = _parsed_calls(text)
    if calls is None:
        return ChatMessage(role=role, content=text), finish_reason
    message = ChatMessage(
        role=role,
        content="",
        tool_calls=[
            ToolCall(id=random_tool_call_id(), function=FunctionCallOutput(name=name, arguments=arguments))
            for name, arguments in calls
        ],
    )
    return message, "tool_calls" if finish_reason == "stop" else finish_reason


def _parsed_calls(text: str) -> list[tuple[str, str]] | None:
    """(name, JSON arguments) of each call in a "required" array; None if the text is not one."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return None
    if not isinstance(value, list) or not all(_is_call(item) for item in value):
        return None
    return [(item["name"], _arguments(item["parameters"])) for item in value]


def _is_call(item: Any) -> bool:
    return isinstance(item, dict) and isinstance(item.get("name"), str) and "parameters" in item


def _arguments(parameters: Any) -> str:
    return json.dumps(parameters, ensure_ascii=False)


class ToolCallDeltas:
    """One choice's stream of tool-call deltas: feed it each new piece of output text."""

    def __init__(self, forced: ForcedToolChoice) -> None:
        self._forced = forced
        self._named_started = False
        self._calls_sent = 0
        self._scanner = _ArrayElements()

    def feed(self, text: str) -> list[DeltaToolCall]:
        """The deltas `text` completes (possibly none)."""
        if self._forced.name is not None:
            return self._named(text)
        deltas = []
        for element in self._scanner.feed(text):
            call = _parsed_call(element)
            if call is None:
                continue
            name, arguments = call
            deltas.append(
                DeltaToolCall(
                    index=self._calls_sent,
                    id=random_tool_call_id(),
                    type="function",
                    function=DeltaFunctionCall(name=name, arguments=arguments),
                )
            )
            self._calls_sent += 1
        return deltas

    def finish_reason(self, engine_reason: str | None) -> str | None:
        """vLLM: a "required" stream that sent calls and stopped normally finishes with "tool_calls"."""
        if self._forced.required and self._calls_sent and engine_reason == "stop":
            return "tool_calls"
        return engine_reason

    def _named(self, text: str) -> list[DeltaToolCall]:
        if self._named_started:
            return [DeltaToolCall(index=0, function=DeltaFunctionCall(arguments=text))] if text else []
        self._named_started = True
        return [
            DeltaToolCall(
                index=0,
                id=random_tool_call_id(),
                type="function",
                function=DeltaFunctionCall(name=self._forced.name, arguments=text),
            )
        ]


def _parsed_call(element: str) -> tuple[str, str] | None:
    try:
        item = json.loads(element)
    except json.JSONDecodeError:
        return None
    return (item["name"], _arguments(item["parameters"])) if _is_call(item) else None


class _ArrayElements:
    """Cuts the text of a JSON array, arriving in pieces, into the texts of its complete elements.

    Tracks only what delimits elements: nesting depth and whether the scan is inside a string (where
    brackets do not count) or just after a backslash there.
    """

    def __init__(self) -> None:
        self._depth = 0
        self._in_string = False
        self._escaped = False
        self._element: list[str] = []

    def feed(self, text: str) -> list[str]:
        done = []
        for char in text:
            if self._depth >= 2 or (self._depth == 1 and char not in ",]" and not char.isspace()):
                self._element.append(char)
            if self._in_string:
                if self._escaped:
                    self._escaped = False
                elif char == "\\":
                    self._escaped = True
                elif char == '"':
                    self._in_string = False
                continue
            if char == '"':
                self._in_string = True
            elif char in "[{":
                self._depth += 1
            elif char in "]}":
                self._depth -= 1
                if self._depth == 1 and self._element:
                    done.append("".join(self._element))
                    self._element = []
        return done
