"""Mistral tool calls: `[TOOL_CALLS][{"name": ..., "arguments": {...}}, ...]`.

As vLLM's `mistral` parser for Hugging Face tokenizers: the text before `[TOOL_CALLS]` is the content
and a JSON array of call objects follows the marker (a single bare object is accepted too). Ids are nine
letters and digits, the only ids Mistral's chat templates accept back. `[TOOL_CALLS]` is a special
token, so the request's output keeps special tokens while this parser reads it (vLLM does the same).
The newer `[TOOL_CALLS]name[ARGS]{...}` layout of v11+ tokenizers is not read.
"""

from __future__ import annotations

from jaxserve.http.tool_parsers.base import WHITESPACE, IdFactory, mistral_tool_call_id
from jaxserve.http.tool_parsers.tagged import TaggedToolStream

START_TAG = "[TOOL_CALLS]"


class MistralToolStream(TaggedToolStream):
    start_tag = START_TAG
    special_tokens_in_text = True

    def __init__(self, new_id: IdFactory = mistral_tool_call_id) -> None:
        super().__init__(new_id)
        self._enter_region()

    def _enter_region(self) -> None:
        # open: before "[" or "{"; item: an array element expected; next: "," or "]" expected
        self._state = "open"
        self._in_array = False

    def _region_step(self, char: str) -> bool:
        if self._in_call:
            consumed = self._call_char(char)
            if not self._in_call and not self.failed:
                if self._in_array:
                    self._state = "next"
                else:
                    self._leave_region()
            return consumed
        if char in WHITESPACE:
            return True
        if self._state == "open" and char == "[":
            self._in_array = True
            self._state = "first"
        elif self._state in ("open", "first", "item") and char == "{":
            self._begin_call()
            return self._call_char(char)
        elif self._state in ("first", "next") and char == "]":
            self._leave_region()
        elif self._state == "next" and char == ",":
            self._state = "item"
        else:
            self._fail()
            return False
        return True

    def _region_end(self) -> None:
        # An array the model did not close still holds complete calls (the output may stop after them).
        if self._in_call or self._state != "next":
            self._fail()
