"""Splits generated text into reasoning (inside one `<think>…</think>` block) and content.

A character-level state machine, like the tool-call parsers: text that could still be a tag is held
back until decided, so a stream's deltas concatenate to the whole-text result wherever it was cut, and
the tags themselves never reach the client. Only the first block counts; tags after it are content.

Where the text starts:
- inside reasoning when the prompt ends with an open `<think>` (templates that open the block for the
  model: DeepSeek-R1's newer ones, Qwen3.5) or when the parser assumes so (deepseek_r1 always);
- in content when the prompt ends with a closed block (Qwen3's `enable_thinking=false` template writes
  `<think>\\n\\n</think>\\n\\n` itself), as vLLM does when the prompt already ends the reasoning;
- otherwise in content, where a `<think>` before any other text opens the block.
Unless the prompt closed the block, a `<think>` the model writes first (after whitespace) opens the
block and is dropped.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

START_TAG = "<think>"
END_TAG = "</think>"
WHITESPACE = " \t\n\r"


class PromptThinking(enum.Enum):
    """What the rendered prompt says about the block the model is about to write."""

    OPEN = "open"  # the prompt ends with <think>: the model starts inside the block
    CLOSED = "closed"  # the prompt ends with <think>…</think>: the model writes no block
    NONE = "none"


def prompt_thinking(prompt_text: str) -> PromptThinking:
    """Read the end of the rendered prompt (only trailing whitespace may follow the tag)."""
    tail = prompt_text.rstrip(WHITESPACE)
    if tail.endswith(START_TAG):
        return PromptThinking.OPEN
    if tail.endswith(END_TAG):
        return PromptThinking.CLOSED
    return PromptThinking.NONE


@dataclass
class ReasoningDelta:
    reasoning: str = ""
    content: str = ""

    def __bool__(self) -> bool:
        return bool(self.reasoning or self.content)


@dataclass(frozen=True)
class ExtractedReasoning:
    """A whole response: the reasoning (None when there was none) and the content (None when empty
    after a reasoning block, as vLLM)."""

    reasoning: str | None
    content: str | None


class _State(enum.Enum):
    OPENING = "opening"  # only whitespace (and maybe part of <think>) so far
    REASONING = "reasoning"
    CONTENT = "content"


class ThinkStream:
    """One choice's splitter. `starts_in_reasoning`: text before any tag is reasoning (else content)."""

    def __init__(self, *, starts_in_reasoning: bool, prompt_closed: bool = False) -> None:
        self._starts_in_reasoning = starts_in_reasoning
        self._state = _State.CONTENT if prompt_closed else _State.OPENING
        self.reasoning_started = False
        self._held = ""
        self._delta = ReasoningDelta()

    def feed(self, text: str) -> ReasoningDelta:
        for char in text:
            self._step(char)
        return self._take()

    def finish(self) -> ReasoningDelta:
        if self._state is _State.OPENING:
            held, self._held = self._held, ""
            self._undecided_opening(held)
        if self._state is _State.REASONING:
            self._delta.reasoning += self._held  # a partial </think> that never completed
        self._held = ""
        return self._take()

    def _take(self) -> ReasoningDelta:
        delta, self._delta = self._delta, ReasoningDelta()
        return delta

    def _step(self, char: str) -> None:
        if self._state is _State.CONTENT:
            self._delta.content += char
        elif self._state is _State.REASONING:
            self._reasoning_char(char)
        else:
            self._opening_char(char)

    def _opening_char(self, char: str) -> None:
        self._held += char
        lead = self._held.lstrip(WHITESPACE)
        if lead == START_TAG:
            self._held = ""
            self._enter_reasoning()
        elif not START_TAG.startswith(lead):
            held, self._held = self._held, ""
            self._undecided_opening(held)

    def _undecided_opening(self, held: str) -> None:
        """No <think> opened the text: it starts where the parser assumes; replay what was held."""
        if self._starts_in_reasoning:
            self._enter_reasoning()
        else:
            self._state = _State.CONTENT
        for char in held:
            self._step(char)

    def _enter_reasoning(self) -> None:
        self._state = _State.REASONING
        self.reasoning_started = True

    def _reasoning_char(self, char: str) -> None:
        self._held += char
        if self._held.endswith(END_TAG):
            self._delta.reasoning += self._held[: -len(END_TAG)]
            self._held = ""
            self._state = _State.CONTENT
            return
        for length in range(min(len(self._held), len(END_TAG) - 1), 0, -1):
            if self._held.endswith(END_TAG[:length]):
                self._delta.reasoning += self._held[:-length]
                self._held = self._held[-length:]
                return
        self._delta.reasoning += self._held
        self._held = ""


def extract_reasoning(stream: ThinkStream, text: str) -> ExtractedReasoning:
    """A whole response through a fresh splitter."""
    first = stream.feed(text)
    last = stream.finish()
    reasoning = first.reasoning + last.reasoning
    content = first.content + last.content
    if not stream.reasoning_started:
        return ExtractedReasoning(reasoning=None, content=content)
    return ExtractedReasoning(reasoning=reasoning or None, content=content or None)
