"""Formats whose calls sit in markup opened by a fixed tag inside free text (hermes, mistral).

Text outside the markup is the message content, with one refinement: a run of outside text that is
only whitespace and touches a call (the newline before `<tool_call>`, the newlines between calls) is
dropped, so a reply that is only calls has `content: null`. Any other run is kept whole.
"""

from __future__ import annotations

from abc import abstractmethod

from jaxserve.http.tool_parsers.base import WHITESPACE, IdFactory, ToolCallStream, random_tool_call_id


def partial_tag_length(text: str, tag: str) -> int:
    """The length of the longest end of `text` that is a proper beginning of `tag`."""
    for length in range(min(len(text), len(tag) - 1), 0, -1):
        if text.endswith(tag[:length]):
            return length
    return 0


class TaggedToolStream(ToolCallStream):
    """Outside text until `start_tag`; then the subclass's region states until it calls `_leave_region`."""

    start_tag: str

    def __init__(self, new_id: IdFactory = random_tool_call_id) -> None:
        super().__init__(new_id)
        self._outside = True
        self._held = ""  # outside text not yet sent: a whitespace-only run, or a possible partial tag
        self._run_has_text = False  # the current outside run has non-whitespace (so it is being sent)

    def _step(self, char: str) -> bool:
        if self._outside:
            self._outside_char(char)
            return True
        return self._region_step(char)

    def _end(self) -> None:
        if self._outside:
            if self._run_has_text or not self.tool_calls:
                self._content(self._held)
            self._held = ""
        else:
            self._region_end()

    @abstractmethod
    def _region_step(self, char: str) -> bool:
        """One character inside the markup (see ToolCallStream._step)."""

    @abstractmethod
    def _region_end(self) -> None:
        """The text ended inside the markup."""

    def _enter_region(self) -> None:
        """Hook for subclasses: the start tag was read."""

    def _leave_region(self) -> None:
        self._end_region()
        self._outside = True
        self._run_has_text = False

    def _outside_char(self, char: str) -> None:
        self._held += char
        if self._held.endswith(self.start_tag):
            before = self._held[: -len(self.start_tag)]
            if self._run_has_text:
                self._content(before)
            self._held = ""
            self._outside = False
            self._begin_region(self.start_tag)
            self._enter_region()
            return
        undecided = partial_tag_length(self._held, self.start_tag)
        decided = self._held[: len(self._held) - undecided]
        if not self._run_has_text and decided.strip(WHITESPACE):
            self._run_has_text = True
        if self._run_has_text:
            self._content(decided)
            self._held = self._held[len(decided) :]
