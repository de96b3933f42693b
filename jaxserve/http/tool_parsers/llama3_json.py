"""Llama 3.x JSON tool calls: `{"name": ..., "parameters": {...}}`, optionally after `<|python_tag|>`,
several separated by `;`.

As vLLM's `llama3_json` parser: the output is tool calls only when it starts with `<|python_tag|>` or
`{` (leading whitespace allowed here), and then it is nothing but calls (content null); otherwise it is
all content. The arguments are under "parameters" (Llama's templates) or "arguments".
`<|python_tag|>` is a special token, so the output keeps special tokens while this parser reads it.
"""

from __future__ import annotations

from jaxserve.http.tool_parsers.base import WHITESPACE, IdFactory, ToolCallStream, random_tool_call_id

PYTHON_TAG = "<|python_tag|>"
ARGUMENT_KEYS = ("parameters", "arguments")


class Llama3JsonToolStream(ToolCallStream):
    special_tokens_in_text = True

    def __init__(self, new_id: IdFactory = random_tool_call_id) -> None:
        super().__init__(new_id)
        # start: deciding (held holds the leading text); content: plain text; open: a call or the end
        # expected; next: ";" or the end expected
        self._state = "start"
        self._held = ""

    def _step(self, char: str) -> bool:
        if self._state == "content":
            self._content(char)
            return True
        if self._state == "start":
            return self._start_char(char)
        if self._in_call:
            consumed = self._call_char(char)
            if not self._in_call:
                self._state = "next"
            return consumed
        if char in WHITESPACE:
            return True
        if self._state == "open" and char == "{":
            self._begin_call(ARGUMENT_KEYS)
            return self._call_char(char)
        if self._state == "next" and char == ";":
            self._state = "open"
            return True
        self._fail()
        return False

    def _start_char(self, char: str) -> bool:
        self._held += char
        lead = self._held.lstrip(WHITESPACE)
        if not lead or (PYTHON_TAG.startswith(lead) and lead != PYTHON_TAG):
            return True
        if lead == PYTHON_TAG:
            self._begin_region(self._held)
            self._state = "open"
            return True
        if lead == "{":
            self._begin_region(self._held[:-1])
            self._state = "open"
            return False  # the "{" opens the first call
        self._state = "content"
        self._content(self._held)
        return True

    def _end(self) -> None:
        if self._state == "start":
            self._content(self._held)
        elif self._in_call or (self._state == "open" and not self.tool_calls):
            self._fail()
