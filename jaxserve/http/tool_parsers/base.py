"""What every tool-call parser shares: its results, the streaming contract, and the call bookkeeping.

A parser is a character-level state machine over the generated text. Streaming feeds it each new piece
of text; a whole response feeds it all at once. Because every decision depends on the characters and
never on where the pieces were cut, the deltas of a stream always concatenate to the whole-text result.
Text that might still turn out to be markup (a partial `<tool_call>`) is held back until it is decided.

Malformed tool calls follow vLLM: a whole response whose calls do not parse has no tool calls and its
whole text is the content. A stream cannot take back what it sent; it sends the text of the broken
markup region as content (unless one of its calls was already sent as a delta), and everything after
it as content.
"""

from __future__ import annotations

import secrets
import string
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field

from jaxserve.http.tool_parsers.call_reader import CallReader
from jaxserve.http.tool_parsers.json_stream import JsonSyntaxError

WHITESPACE = " \t\n\r"

IdFactory = Callable[[], str]


def random_tool_call_id() -> str:
    """OpenAI's spelling of a tool-call id, "call_" and 24 random hex digits, for parsed and forced calls
    alike (vLLM spells its ids "chatcmpl-tool-" + 32 hex digits)."""
    return f"call_{secrets.token_hex(12)}"


_ALPHANUMERIC = string.ascii_letters + string.digits


def mistral_tool_call_id() -> str:
    """Nine letters and digits: Mistral's chat templates refuse any other id when the call is sent back
    (vLLM's MistralToolCall ids)."""
    return "".join(secrets.choice(_ALPHANUMERIC) for _ in range(9))


@dataclass(frozen=True)
class ToolCall:
    """One parsed call: `arguments` is JSON text."""

    id: str
    name: str
    arguments: str


@dataclass
class ToolCallDelta:
    """What one stream step adds to call `index`: its id and name the first time, then argument text."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


@dataclass
class ToolParseDelta:
    """What one stream step adds to the message."""

    content: str = ""
    tool_calls: list[ToolCallDelta] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.content or self.tool_calls)


@dataclass(frozen=True)
class ExtractedToolCalls:
    """A whole response: its calls and the text outside them (None when calls took all of it)."""

    tool_calls: list[ToolCall]
    content: str | None


class ToolCallStream(ABC):
    """One choice's parser. Subclasses implement `_step` (one character in the current state) and `_end`."""

    special_tokens_in_text = False
    """Whether the format's markers are (or may be) special tokens, which the detokenizer must then keep."""

    def __init__(self, new_id: IdFactory = random_tool_call_id) -> None:
        self._new_id = new_id
        self.tool_calls: list[ToolCall] = []
        self.failed = False
        self._delta = ToolParseDelta()
        self._call: CallReader | None = None
        self._call_id = ""
        self._call_arguments: list[str] = []
        self._header_sent = False
        self._in_region = False
        self._region_raw: list[str] = []  # the current markup region's text, sent as content on failure
        self._region_streamed = False  # whether a delta of this region's calls was sent

    def feed(self, text: str) -> ToolParseDelta:
        """The next piece of generated text -> what it adds (possibly nothing, while text is held)."""
        for char in text:
            while True:
                if self.failed:
                    self._content(char)
                    break
                in_region = self._in_region
                if self._step(char):
                    if in_region and self._in_region:
                        self._region_raw.append(char)
                    break
        return self._take()

    def finish(self) -> ToolParseDelta:
        """The text ended: release held text; an unfinished call is a malformed one."""
        if not self.failed:
            self._end()
        return self._take()

    @abstractmethod
    def _step(self, char: str) -> bool:
        """Handle one character; False means "the state changed, handle this character again"."""

    @abstractmethod
    def _end(self) -> None:
        """The end of the text in the current state."""

    def _take(self) -> ToolParseDelta:
        delta, self._delta = self._delta, ToolParseDelta()
        return delta

    def _content(self, text: str) -> None:
        self._delta.content += text

    def _begin_region(self, markup: str) -> None:
        """Markup opening tool calls was read (`markup` is its text so far)."""
        self._in_region = True
        self._region_raw = [markup]
        self._region_streamed = False

    def _end_region(self) -> None:
        self._in_region = False
        self._region_raw = []

    def _fail(self) -> None:
        """A malformed call: stop parsing; the region's text so far becomes content (see module doc)."""
        self.failed = True
        if not self._region_streamed:
            self._content("".join(self._region_raw))
        self._call = None
        self._end_region()

    def _begin_call(self, argument_keys: tuple[str, ...] = ("arguments",)) -> None:
        self._call = CallReader(argument_keys)
        self._call_id = self._new_id()
        self._call_arguments = []
        self._header_sent = False

    @property
    def _in_call(self) -> bool:
        return self._call is not None

    def _call_char(self, char: str) -> bool:
        """Push a character into the current call. False when the call ended before it (or was malformed,
        in which case the parser has failed); the character then belongs to the next state."""
        call = self._call
        assert call is not None
        try:
            consumed = call.push(char)
        except JsonSyntaxError:
            self._fail()
            return False
        if call.name is not None:
            self._send_call_progress(call)
        if call.complete:
            self.tool_calls.append(ToolCall(self._call_id, call.name or "", "".join(self._call_arguments)))
            self._call = None
        return consumed

    def _send_call_progress(self, call: CallReader) -> None:
        index = len(self.tool_calls)
        arguments = call.take_arguments()
        self._call_arguments.append(arguments)
        if not self._header_sent:
            self._header_sent = True
            self._region_streamed = True
            self._delta.tool_calls.append(
                ToolCallDelta(index=index, id=self._call_id, name=call.name, arguments=arguments)
            )
        elif arguments:
            last = self._delta.tool_calls[-1] if self._delta.tool_calls else None
            if last is not None and last.index == index:
                last.arguments += arguments
            else:
                self._delta.tool_calls.append(ToolCallDelta(index=index, arguments=arguments))


def extract_tool_calls(stream: ToolCallStream, text: str) -> ExtractedToolCalls:
    """A whole response through a fresh parser, with vLLM's rule for malformed calls."""
    delta = stream.feed(text)
    closing = stream.finish()
    if stream.failed or not stream.tool_calls:
        return ExtractedToolCalls(tool_calls=[], content=text)
    content = delta.content + closing.content
    return ExtractedToolCalls(tool_calls=list(stream.tool_calls), content=content or None)
