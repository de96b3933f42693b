"""One request's reading of its generated text: reasoning first, then tool calls in what follows it.

vLLM's order: the reasoning parser splits off the thinking, and only the content part goes through the
tool-call parser. `include_reasoning: false` drops the reasoning; `parallel_tool_calls: false` keeps
only the first call (vLLM's maybe_filter_parallel_tool_calls: later calls are parsed, then not sent).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from jaxserve.http.parser_settings import ParserSettings
from jaxserve.http.protocol.chat_request import ChatCompletionRequest
from jaxserve.http.protocol.chat_stream import DeltaFunctionCall, DeltaMessage, DeltaToolCall
from jaxserve.http.reasoning.registry import ReasoningParser, reasoning_parser
from jaxserve.http.reasoning.think import ThinkStream, extract_reasoning
from jaxserve.http.tool_parsers.base import ToolCall, ToolCallDelta, ToolCallStream, extract_tool_calls
from jaxserve.http.tool_parsers.registry import tool_parser
from jaxserve.http.translate.auto_tools import tool_choice_is_auto

if TYPE_CHECKING:
    from collections.abc import Sequence

    from jaxserve.modeling.tokenizer import Tokenizer

PROMPT_TAIL_TOKENS = 16
"""Prompt tokens decoded to see whether the template opened or closed a think block: the tag and the
whitespace after it fit in a few tokens with any tokenizer."""


@dataclass
class MessageDelta:
    """What one stream step adds to a choice's message."""

    content: str = ""
    reasoning: str = ""
    tool_calls: list[ToolCallDelta] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.content or self.reasoning or self.tool_calls)

    def extend(self, other: MessageDelta) -> None:
        self.content += other.content
        self.reasoning += other.reasoning
        self.tool_calls.extend(other.tool_calls)


@dataclass(frozen=True)
class ParsedMessage:
    """A whole choice's message parts."""

    content: str | None
    reasoning: str | None
    tool_calls: list[ToolCall]


@dataclass(frozen=True)
class OutputParsing:
    """How every choice of one request is read; `choice_stream` gives a streaming reader per choice."""

    tools: type[ToolCallStream] | None = None
    reasoning: ReasoningParser | None = None
    prompt_text: str = ""  # the prompt's last tokens as text, for the reasoning parser
    include_reasoning: bool = True
    parallel_tool_calls: bool = True

    @property
    def keeps_special_tokens(self) -> bool:
        """Whether the output must keep special tokens: the tool format's markers are special tokens."""
        return self.tools is not None and self.tools.special_tokens_in_text

    def choice_stream(self) -> ChoiceStream:
        return ChoiceStream(self)

    def parse(self, text: str) -> ParsedMessage:
        """A whole choice's text -> its message parts."""
        reasoning: str | None = None
        content: str | None = text
        if self.reasoning is not None:
            split = extract_reasoning(self.reasoning.stream(self.prompt_text), text)
            reasoning, content = split.reasoning, split.content
        calls: list[ToolCall] = []
        if self.tools is not None:
            extracted = extract_tool_calls(self.tools(), content or "")
            calls = extracted.tool_calls if self.parallel_tool_calls else extracted.tool_calls[:1]
            if extracted.tool_calls:
                content = extracted.content
        return ParsedMessage(
            content=content, reasoning=reasoning if self.include_reasoning else None, tool_calls=calls
        )


class ChoiceStream:
    """One streamed choice: feed each new piece of text, then finish; `tools_called` once a call was sent."""

    def __init__(self, parsing: OutputParsing) -> None:
        self._parsing = parsing
        self._think: ThinkStream | None = (
            parsing.reasoning.stream(parsing.prompt_text) if parsing.reasoning is not None else None
        )
        self._tools: ToolCallStream | None = parsing.tools() if parsing.tools is not None else None
        self.tools_called = False

    def feed(self, text: str) -> MessageDelta:
        if self._think is None:
            return self._content(text, finished=False)
        split = self._think.feed(text)
        return self._with_reasoning(self._content(split.content, finished=False), split.reasoning)

    def finish(self) -> MessageDelta:
        """Release held-back text at the end of the output."""
        if self._think is None:
            return self._content("", finished=True)
        split = self._think.finish()
        return self._with_reasoning(self._content(split.content, finished=True), split.reasoning)

    def _content(self, text: str, *, finished: bool) -> MessageDelta:
        if self._tools is None:
            return MessageDelta(content=text)
        parsed = self._tools.feed(text)
        if finished:
            closing = self._tools.finish()
            parsed.content += closing.content
            parsed.tool_calls.extend(closing.tool_calls)
        calls = parsed.tool_calls
        if not self._parsing.parallel_tool_calls:
            calls = [call for call in calls if call.index == 0]
        self.tools_called = self.tools_called or bool(calls)
        return MessageDelta(content=parsed.content, tool_calls=calls)

    def _with_reasoning(self, delta: MessageDelta, reasoning: str) -> MessageDelta:
        if self._parsing.include_reasoning:
            delta.reasoning = reasoning
        return delta


def to_delta_message(delta: MessageDelta) -> DeltaMessage:
    """The chunk delta of a message delta, with only the keys it has (chunks serialise set keys only):
    a call's first delta carries its id, type and name, later ones argument text."""
    message = DeltaMessage()
    if delta.content:
        message.content = delta.content
    if delta.reasoning:
        message.reasoning = delta.reasoning
        message.reasoning_content = delta.reasoning
    if delta.tool_calls:
        message.tool_calls = [_delta_tool_call(call) for call in delta.tool_calls]
    return message


def _delta_tool_call(call: ToolCallDelta) -> DeltaToolCall:
    if call.id is None:
        return DeltaToolCall(index=call.index, function=DeltaFunctionCall(arguments=call.arguments))
    return DeltaToolCall(
        index=call.index,
        id=call.id,
        type="function",
        function=DeltaFunctionCall(name=call.name, arguments=call.arguments),
    )


def output_parsing(
    request: ChatCompletionRequest,
    settings: ParserSettings,
    tokenizer: Tokenizer,
    prompt_token_ids: Sequence[int],
) -> OutputParsing | None:
    """How this request's output is read, or None when it is plain text."""
    tools = None
    if (
        settings.auto_tool_choice
        and settings.tool_call_parser
        and tool_choice_is_auto(request)
        and request.tools
    ):
        tools = tool_parser(settings.tool_call_parser)
    reasoning = reasoning_parser(settings.reasoning_parser) if settings.reasoning_parser else None
    if tools is None and reasoning is None:
        return None
    prompt_text = ""
    if reasoning is not None:
        prompt_text = tokenizer.decode(prompt_token_ids[-PROMPT_TAIL_TOKENS:], skip_special_tokens=False)
    return OutputParsing(
        tools=tools,
        reasoning=reasoning,
        prompt_text=prompt_text,
        include_reasoning=request.include_reasoning,
        parallel_tool_calls=request.parallel_tool_calls is not False,
    )
