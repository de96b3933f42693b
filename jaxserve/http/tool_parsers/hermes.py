"""Hermes / Qwen / SmolLM2 tool calls: `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`.

As vLLM's `hermes` parser: each call is one JSON object between the tags; a last call whose closing tag
never came (the model stopped after the object) still counts. Unlike vLLM, text after the calls is kept
as content in whole responses too (vLLM keeps it only when streaming), so both agree. Some models mark
the tags as special tokens, so (as vLLM does) the output keeps special tokens while this parser reads it.
"""

from __future__ import annotations

from jaxserve.http.tool_parsers.base import WHITESPACE, IdFactory, random_tool_call_id
from jaxserve.http.tool_parsers.tagged import TaggedToolStream

START_TAG = "<tool_call>"
END_TAG = "</tool_call>"


class HermesToolStream(TaggedToolStream):
    start_tag = START_TAG
    special_tokens_in_text = True

    def __init__(self, new_id: IdFactory = random_tool_call_id) -> None:
        super().__init__(new_id)
        self._enter_region()

    def _enter_region(self) -> None:
        self._closing = ""  # the part of END_TAG read after the call
        self._call_done = False

    def _region_step(self, char: str) -> bool:
        if self._in_call:
            return self._call_char(char)
        if not self._call_done:
            if char in WHITESPACE:
                return True
            self._begin_call()
            self._call_done = True
            return self._call_char(char)
        if char in WHITESPACE and not self._closing:
            return True
        self._closing += char
        if not END_TAG.startswith(self._closing):
            self._fail()
            return False
        if self._closing == END_TAG:
            self._leave_region()
        return True

    def _region_end(self) -> None:
        if self._in_call or not self._call_done:
            self._fail()
        # A call followed by nothing, or by part of its closing tag, is complete (vLLM's unclosed form).
