"""Streaming ids -> text for one request, in O(1) work per token.

Decoding each new token on its own is wrong for byte-level BPE (an emoji is often 2-4 tokens of raw bytes)
and for sentencepiece (whether a token starts with a space depends on its neighbour). Decoding the whole
output each step is right but quadratic. This keeps the prefix-offset / read-offset window vLLM uses:

    ids:   ... | prefix window (already emitted) | pending (not yet emitted) |
                 ^ window start                    ^ read offset

Each step decodes the window with and without the pending tokens; the difference is the new text. It is
held back while it ends in an incomplete UTF-8 sequence (the decode ends in U+FFFD), and once emitted the
window slides so that the just-read tokens become the next prefix.

The joined pieces equal a full decode of the same ids for any valid UTF-8 output, and for byte-level BPE
even for invalid bytes. One case cannot be matched by any stream: sentencepiece's ByteFallback decoder
turns a whole run of `<0xHH>` tokens into U+FFFDs when the run is invalid, so a stray byte can "un-decode"
characters before it; there a garbled output's replacement characters may sit differently.
"""

from __future__ import annotations

import codecs
from collections.abc import Sequence

from jaxserve.modeling.tokenizer import Tokenizer

REPLACEMENT_CHAR = "\ufffd"
"""What a decoder writes for bytes that are not (yet) valid UTF-8."""

PROMPT_CONTEXT_TOKENS = 5
"""Prompt tokens kept as the first prefix window: enough for the first output token to decode in context
(e.g. keep its leading space), as in vLLM."""


class IncrementalDetokenizer:
    """Turns one request's output token ids into text as they arrive.

    `prompt_ids`, if given, are decoding context only: their text is never emitted.
    """

    def __init__(
        self, tokenizer: Tokenizer, skip_special_tokens: bool = True, *, prompt_ids: Sequence[int] = ()
    ) -> None:
        self._tokenizer = tokenizer
        self._skip_special_tokens = skip_special_tokens
        # The window: `_ids[:_read]` is the prefix whose text is `_prefix_text`; `_ids[_read:]` is pending.
        self._ids: list[int] = list(
            prompt_ids[len(prompt_ids) - PROMPT_CONTEXT_TOKENS :] if prompt_ids else ()
        )
        self._read = len(self._ids)
        self._prefix_text = self._decode(self._ids)
        self._text = ""

    @property
    def text(self) -> str:
        """All text emitted so far (by `push` and `flush`)."""
        return self._text

    def push(self, token_id: int) -> str:
        """Add one generated token; return the text it completes ("" while a character is incomplete)."""
        self._ids.append(token_id)
        text = self._decode(self._ids)
        if len(text) <= len(self._prefix_text):
            return ""  # e.g. a skipped special token: nothing new yet
        if text.endswith(REPLACEMENT_CHAR) and self._tail_may_complete():
            return ""
        return self._emit(text)

    def flush(self) -> str:
        """Emit whatever is still held back (at the end of generation, incomplete bytes become U+FFFD)."""
        if self._read == len(self._ids):
            return ""
        text = self._decode(self._ids)
        if len(text) <= len(self._prefix_text):
            self._read = len(self._ids)
            self._prefix_text = text
            return ""
        return self._emit(text)

    def _emit(self, text: str) -> str:
        new = text[len(self._prefix_text) :]
        self._text += new
        # Slide: the tokens just read become the prefix. If on their own they decode to nothing (only skipped
        # special tokens, or a lone sentencepiece space that a decoder strips at the start of text), the next
        # token would be decoded as if it started the text, so the old prefix is kept instead.
        just_read = self._decode(self._ids[self._read :])
        if just_read:
            del self._ids[: self._read]
            self._prefix_text = just_read
        else:
            self._prefix_text = text
        self._read = len(self._ids)
        return new

    def _tail_may_complete(self) -> bool:
        """Whether the pending tokens end in the start of a valid UTF-8 sequence (more bytes may finish it).

        A trailing U+FFFD from bytes that can never become valid (e.g. a lone continuation byte) is final, so
        it is emitted rather than held until the end.
        """
        skip = self._skip_special_tokens
        pending = (i for i in self._ids[self._read :] if not (skip and self._tokenizer.is_special(i)))
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        decoder.decode(b"".join(self._tokenizer.token_to_bytes(i) for i in pending), final=False)
        buffered, _ = decoder.getstate()
        return bool(buffered)

    def _decode(self, ids: Sequence[int]) -> str:
        return self._tokenizer.decode(ids, skip_special_tokens=self._skip_special_tokens) if ids else ""
