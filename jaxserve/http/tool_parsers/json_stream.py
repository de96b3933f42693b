"""An incremental JSON reader that re-writes one JSON value in a canonical spacing as its text arrives.

Tool-call arguments are streamed as fragments that clients concatenate. Re-serialising a partial parse
on every token (vLLM's partial-JSON diffing) can emit text that a later token contradicts; this reader
instead writes each character of the canonical form the moment it is certain, so the fragments always
concatenate to the same text as one call over the whole value, whatever the split points.

Canonical form: Python's `json.dumps(value, ensure_ascii=False)` spacing (`", "` and `": "`, nothing
else between tokens), strings re-escaped the way `json.dumps` escapes them, numbers as written (after
checking them against the JSON grammar; rewriting `1e5` as `100000.0` would gain nothing). Two lenient
choices, both keeping the output valid JSON: raw control characters inside strings (models write literal
newlines) are escaped rather than refused, and a lone UTF-16 surrogate escape stays an escape.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Final

_WHITESPACE: Final = " \t\n\r"
_NUMBER: Final = re.compile(r"-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?")
_NUMBER_CHARS: Final = frozenset("0123456789+-.eE")
_LITERALS: Final = ("true", "false", "null")
_HEX4: Final = re.compile(r"[0-9a-fA-F]{4}")
_SIMPLE_ESCAPES: Final = {
    '"': '"',
    "\\": "\\",
    "/": "/",
    "b": "\b",
    "f": "\f",
    "n": "\n",
    "r": "\r",
    "t": "\t",
}
_DUMPS_ESCAPES: Final = {
    '"': '\\"',
    "\\": "\\\\",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
}


class JsonSyntaxError(ValueError):
    """The text is not (the start of) one JSON value."""


def escape_char(char: str) -> str:
    """One decoded string character as `json.dumps(..., ensure_ascii=False)` writes it."""
    escaped = _DUMPS_ESCAPES.get(char)
    if escaped is not None:
        return escaped
    code = ord(char)
    if code < 0x20 or 0xD800 <= code <= 0xDFFF:  # control characters; lone surrogates cannot be UTF-8
        return f"\\u{code:04x}"
    return char


@dataclass
class _Container:
    """An open object or array and what it expects next."""

    kind: str  # "{" or "["
    expect: str  # "first" (a key/value or the close), "key", "colon", "value", "comma" (or the close)


@dataclass
class JsonRewriter:
    """Feed the text of ONE JSON value character by character; collect its canonical form.

    `push(char)` returns False for the first character after the value (the caller's text resumes there),
    True otherwise; `complete` says whether the value has ended. Errors raise JsonSyntaxError.
    """

    out: list[str] = field(default_factory=list)
    complete: bool = False
    _stack: list[_Container] = field(default_factory=list)
    _started: bool = False
    _scalar: str = ""  # a number or literal being read
    _in_string: bool = False
    _escape: str | None = None  # the escape being read, without its backslash; None outside escapes
    _high_surrogate: str | None = None  # a decoded high surrogate waiting for its low half

    def take(self) -> str:
        """The canonical text written since the last take."""
        text = "".join(self.out)
        self.out.clear()
        return text

    def push(self, char: str) -> bool:
        if self.complete:
            return False
        if self._in_string:
            self._string_char(char)
            return True
        if self._scalar:
            if char in _NUMBER_CHARS or (char.isalpha() and not self._scalar[0].isdigit()):
                self._scalar += char
                if self._scalar in _LITERALS:
                    self._end_scalar()
                return True
            self._end_scalar()
            if self.complete:
                return False
        if char in _WHITESPACE:
            return True
        self._token(char)
        return True

    def finish(self) -> None:
        """The text ended: a pending top-level number ends with it; anything else unfinished is an error."""
        if self._scalar and not self._stack:
            self._end_scalar()
        if not self.complete:
            raise JsonSyntaxError("the JSON value is incomplete")

    def _token(self, char: str) -> None:
        top = self._stack[-1] if self._stack else None
        if top is None:
            if self._started:
                raise JsonSyntaxError(f"unexpected {char!r} after the JSON value")
            self._started = True
            self._value_start(char)
            return
        if top.expect == "colon":
            if char != ":":
                raise JsonSyntaxError(f"expected ':' but got {char!r}")
            self.out.append(": ")
            top.expect = "value"
        elif top.expect == "comma":
            if char == ",":
                self.out.append(", ")
                top.expect = "key" if top.kind == "{" else "value"
            else:
                self._close(top, char)
        elif top.kind == "{" and top.expect in ("first", "key"):
            if char == "}" and top.expect == "first":
                self._close(top, char)
            elif char == '"':
                top.expect = "colon"
                self._open_string()
            else:
                raise JsonSyntaxError(f"expected an object key but got {char!r}")
        else:  # an array's first element or a value after ':' or ','
            if char == "]" and top.kind == "[" and top.expect == "first":
                self._close(top, char)
                return
            top.expect = "comma"
            self._value_start(char)

    def _value_start(self, char: str) -> None:
        if char in "{[":
            self.out.append(char)
            self._stack.append(_Container(kind=char, expect="first"))
        elif char == '"':
            self._open_string()
        elif char == "-" or char.isdigit() or char in "tfn":
            self._scalar = char
        else:
            raise JsonSyntaxError(f"{char!r} cannot start a JSON value")

    def _close(self, top: _Container, char: str) -> None:
        if char != ("}" if top.kind == "{" else "]"):
            raise JsonSyntaxError(f"expected ',' or the end of the {top.kind} but got {char!r}")
        self.out.append(char)
        self._stack.pop()
        self._value_done()

    def _value_done(self) -> None:
        if not self._stack:
            self.complete = True

    def _end_scalar(self) -> None:
        scalar, self._scalar = self._scalar, ""
        if scalar not in _LITERALS and not _NUMBER.fullmatch(scalar):
            raise JsonSyntaxError(f"{scalar!r} is not a JSON number or literal")
        self.out.append(scalar)
        self._value_done()

    def _open_string(self) -> None:
        self.out.append('"')
        self._in_string = True

    def _string_char(self, char: str) -> None:
        if self._escape is not None:
            self._escape += char
            self._read_escape()
            return
        if char == "\\":
            self._escape = ""
            return
        self._flush_surrogate()
        if char == '"':
            self.out.append('"')
            self._in_string = False
            self._value_done()
        else:
            self.out.append(escape_char(char))

    def _read_escape(self) -> None:
        escape = self._escape or ""
        if escape[0] != "u":
            if escape not in _SIMPLE_ESCAPES:
                raise JsonSyntaxError(f"invalid escape \\{escape}")
            self._escape = None
            self._flush_surrogate()
            self.out.append(escape_char(_SIMPLE_ESCAPES[escape]))
            return
        if len(escape) < 5:
            return
        self._escape = None
        if not _HEX4.fullmatch(escape[1:]):
            raise JsonSyntaxError(f"invalid escape \\{escape}")
        code = int(escape[1:], 16)
        if 0xDC00 <= code <= 0xDFFF and self._high_surrogate is not None:
            # A UTF-16 pair: json.loads joins it into one character, and so does this.
            high, self._high_surrogate = ord(self._high_surrogate), None
            self.out.append(chr(0x10000 + ((high - 0xD800) << 10) + (code - 0xDC00)))
            return
        self._flush_surrogate()
        if 0xD800 <= code <= 0xDBFF:
            self._high_surrogate = chr(code)
        else:
            self.out.append(escape_char(chr(code)))

    def _flush_surrogate(self) -> None:
        if self._high_surrogate is not None:
            self.out.append(escape_char(self._high_surrogate))
            self._high_surrogate = None


def rewrite_json(text: str) -> str:
    """The canonical form of `text`, which must hold exactly one JSON value (and whitespace)."""
    rewriter = JsonRewriter()
    for char in text:
        if not rewriter.push(char) and char not in _WHITESPACE:
            raise JsonSyntaxError(f"unexpected {char!r} after the JSON value")
    rewriter.finish()
    return rewriter.take()
