"""Reads one tool-call object, `{"name": "f", "arguments": {...}}`, as its text arrives.

The name is known once its string closes; the arguments value is re-written canonically (json_stream)
and can be taken fragment by fragment before the object ends. Keys other than the name and the
arguments are read and ignored; the arguments may come before the name.
"""

from __future__ import annotations

import json

from jaxserve.http.tool_parsers.json_stream import JsonRewriter, JsonSyntaxError

_WHITESPACE = " \t\n\r"
NO_ARGUMENTS = "{}"
"""The arguments of a call that names none: a function without parameters is called with `{}`."""


class CallReader:
    """Push the characters of one call object; `push` returns False for the first character after it.

    `argument_keys` are the keys that may hold the arguments (the first one present is used).
    """

    def __init__(self, argument_keys: tuple[str, ...] = ("arguments",)) -> None:
        self._argument_keys = argument_keys
        self.name: str | None = None
        self.complete = False
        self._state = "start"  # start, first, key, colon, value, comma
        self._value: JsonRewriter | None = None
        self._key: str | None = None
        self._reading_key = False
        self._arguments: JsonRewriter | None = None
        self._arguments_seen = False
        self._pending_arguments: list[str] = []

    def take_arguments(self) -> str:
        """Canonical argument text read since the last take (`{}` at the end of a call without any)."""
        if self._arguments is not None:
            self._pending_arguments.append(self._arguments.take())
        text = "".join(self._pending_arguments)
        self._pending_arguments.clear()
        return text

    def push(self, char: str) -> bool:
        if self.complete:
            return False
        if self._value is not None:
            consumed = self._value.push(char)
            if self._value.complete:
                self._end_value()
            if consumed:
                return True
        if char in _WHITESPACE:
            return True
        if self._state == "start":
            if char != "{":
                raise JsonSyntaxError(f"a tool call is a JSON object, not text starting {char!r}")
            self._state = "first"
        elif self._state in ("first", "key"):
            if char == "}" and self._state == "first":
                self._close()
            elif char == '"':
                self._start_value(char, key=None)
                self._state = "colon"
            else:
                raise JsonSyntaxError(f"expected a key in the tool call but got {char!r}")
        elif self._state == "colon":
            if char != ":":
                raise JsonSyntaxError(f"expected ':' in the tool call but got {char!r}")
            self._state = "value"
        elif self._state == "value":
            self._start_value(char, key=self._key)
            self._state = "comma"
        elif char == ",":  # state "comma"
            self._state = "key"
        elif char == "}":
            self._close()
        else:
            raise JsonSyntaxError(f"expected ',' or '}}' in the tool call but got {char!r}")
        return True

    def _start_value(self, char: str, key: str | None) -> None:
        """Begin a key (key=None) or the value of `key`."""
        rewriter = JsonRewriter()
        if key in self._argument_keys and not self._arguments_seen:
            self._arguments = rewriter
            self._arguments_seen = True
        self._value = rewriter
        self._reading_key = key is None
        rewriter.push(char)
        if rewriter.complete:
            self._end_value()

    def _end_value(self) -> None:
        value, self._value = self._value, None
        assert value is not None
        if self._reading_key:
            self._key = json.loads(value.take())
        elif value is self._arguments:
            self._pending_arguments.append(value.take())
            self._arguments = None
        elif self._key == "name" and self.name is None:
            name = json.loads(value.take())
            if not isinstance(name, str) or not name:
                raise JsonSyntaxError("a tool call's name must be a non-empty string")
            self.name = name

    def _close(self) -> None:
        if self.name is None:
            raise JsonSyntaxError("a tool call must have a name")
        if not self._arguments_seen:
            self._pending_arguments.append(NO_ARGUMENTS)
        self.complete = True

    def finish(self) -> None:
        """The text ended inside the call: it is incomplete."""
        if not self.complete:
            raise JsonSyntaxError("the tool call is incomplete")
