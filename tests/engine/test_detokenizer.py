"""jaxserve.engine.detokenizer: streamed text equals the full decode, and never shows half a character."""

from __future__ import annotations

import random
from collections.abc import Sequence

import pytest

from jaxserve.engine.detokenizer import REPLACEMENT_CHAR, IncrementalDetokenizer
from jaxserve.modeling.tokenizer import Tokenizer

TEXTS = (
    "Hello, world! How are you today?",
    "héllo wörld, café crème, São Paulo, ñandú, Ærøskøbing, Straße",
    "中文测试：你好，世界！日本語のテキストです。한국어 문장도 있어요.",
    "Emoji 😀🎉 family 👨‍👩‍👧‍👦 flags 🇫🇷🇯🇵 skin tone 👍🏽 keycap 1️⃣",
    "Ελληνικά, Русский текст, العربية, हिन्दी, עברית, ภาษาไทย",
    "Combining marks: e\u0301 a\u0308 n\u0303 and a zero-width joiner \u200d here",
    "code:\n    def f(x):\n        return x ** 2  # 🐍\n\n\ttabs\r\n",
    "<|im_start|>assistant\nSure 👍 — 好的!<|im_end|>\n<|im_start|>user\n",
    "   leading and trailing spaces   ",
)


def stream(tokenizer: Tokenizer, ids: Sequence[int], skip_special_tokens: bool = True, **kwargs) -> list[str]:
    """Push every id and flush; return the pieces (the last one is what flush emitted)."""
    detokenizer = IncrementalDetokenizer(tokenizer, skip_special_tokens, **kwargs)
    pieces = [detokenizer.push(i) for i in ids]
    pieces.append(detokenizer.flush())
    assert detokenizer.text == "".join(pieces)
    return pieces


@pytest.mark.parametrize("skip_special_tokens", [True, False])
@pytest.mark.parametrize("text", TEXTS)
def test_streamed_text_equals_full_decode(
    smollm2_tokenizer: Tokenizer, text: str, skip_special_tokens: bool
) -> None:
    ids = smollm2_tokenizer.encode(text)
    pieces = stream(smollm2_tokenizer, ids, skip_special_tokens)
    assert "".join(pieces) == smollm2_tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)
    assert not any(REPLACEMENT_CHAR in piece for piece in pieces)
    assert pieces[-1] == ""  # complete text: nothing was left for flush


@pytest.mark.parametrize("skip_special_tokens", [True, False])
@pytest.mark.parametrize("text", TEXTS)
def test_sentencepiece_streamed_text_equals_full_decode(
    sentencepiece_tokenizer: Tokenizer, text: str, skip_special_tokens: bool
) -> None:
    ids = sentencepiece_tokenizer.encode(
        text + "</s>"
    )  # BOS in front, EOS behind: special tokens at both ends
    pieces = stream(sentencepiece_tokenizer, ids, skip_special_tokens)
    assert "".join(pieces) == sentencepiece_tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)
    assert not any(REPLACEMENT_CHAR in piece for piece in pieces)


def test_random_token_streams_equal_full_decode(smollm2_tokenizer: Tokenizer) -> None:
    """Random ids include invalid UTF-8 and stray special tokens: the joined pieces still equal a full decode
    (byte-level BPE decodes bytes like a UTF-8 stream, so an invalid byte's U+FFFD does not depend on later
    tokens)."""
    rng = random.Random(1234)
    for _ in range(100):
        ids = [rng.randrange(smollm2_tokenizer.vocab_size) for _ in range(rng.randrange(1, 30))]
        for skip in (True, False):
            assert "".join(stream(smollm2_tokenizer, ids, skip)) == smollm2_tokenizer.decode(
                ids, skip_special_tokens=skip
            )


def test_random_sentencepiece_streams_of_valid_text_equal_full_decode(
    sentencepiece_tokenizer: Tokenizer,
) -> None:
    """Random merges, special tokens and byte-fallback characters (valid UTF-8 only: sentencepiece's
    ByteFallback decoder turns a whole invalid byte run into U+FFFDs, which no stream can foresee)."""
    rng = random.Random(99)
    byte_tokens = {
        i
        for i in range(sentencepiece_tokenizer.vocab_size)
        if sentencepiece_tokenizer.hf.convert_ids_to_tokens(i).startswith("<0x")
    }
    plain = [i for i in range(sentencepiece_tokenizer.vocab_size) if i not in byte_tokens]
    characters = "é你😀ñ한🇫ß€"
    for _ in range(100):
        ids: list[int] = []
        while len(ids) < 25:
            if rng.random() < 0.3:
                ids += sentencepiece_tokenizer.encode(rng.choice(characters), add_special_tokens=False)
            else:
                ids.append(rng.choice(plain))
        for skip in (True, False):
            pieces = stream(sentencepiece_tokenizer, ids, skip)
            assert "".join(pieces) == sentencepiece_tokenizer.decode(ids, skip_special_tokens=skip)
            assert not any(REPLACEMENT_CHAR in piece for piece in pieces)


def test_emoji_split_over_byte_tokens_is_held_back_until_complete(smollm2_tokenizer: Tokenizer) -> None:
    ids = smollm2_tokenizer.encode(" 😀")
    assert len(ids) == 2
    detokenizer = IncrementalDetokenizer(smollm2_tokenizer)
    assert detokenizer.push(ids[0]) == ""
    assert detokenizer.push(ids[1]) == " 😀"


def test_cjk_characters_arrive_whole(smollm2_tokenizer: Tokenizer) -> None:
    text = "你好世界"
    ids = smollm2_tokenizer.encode(text)
    assert len(ids) > len(text)  # some characters take more than one token
    pieces = [piece for piece in stream(smollm2_tokenizer, ids) if piece]
    assert "".join(pieces) == text
    assert all(len(piece.encode("utf-8")) % 3 == 0 for piece in pieces)  # whole 3-byte characters only


def test_flush_emits_an_unfinished_character_as_replacement(smollm2_tokenizer: Tokenizer) -> None:
    first_byte_token = smollm2_tokenizer.encode("😀")[0]
    detokenizer = IncrementalDetokenizer(smollm2_tokenizer)
    assert detokenizer.push(first_byte_token) == ""
    tail = detokenizer.flush()
    assert tail == smollm2_tokenizer.decode([first_byte_token])
    assert tail.endswith(REPLACEMENT_CHAR)
    assert detokenizer.flush() == ""


def test_bytes_that_can_never_be_valid_are_not_held_back(smollm2_tokenizer: Tokenizer) -> None:
    continuation_byte = next(
        i for i in range(smollm2_tokenizer.vocab_size) if smollm2_tokenizer.token_to_bytes(i) == b"\x80"
    )
    detokenizer = IncrementalDetokenizer(smollm2_tokenizer)
    assert detokenizer.push(smollm2_tokenizer.encode("ok")[0]) == "ok"
    assert detokenizer.push(continuation_byte) == REPLACEMENT_CHAR


def test_special_tokens_are_dropped_or_kept(smollm2_tokenizer: Tokenizer) -> None:
    ids = smollm2_tokenizer.encode("Hi<|im_end|>")
    assert "".join(stream(smollm2_tokenizer, ids, skip_special_tokens=True)) == "Hi"
    assert "".join(stream(smollm2_tokenizer, ids, skip_special_tokens=False)) == "Hi<|im_end|>"
    detokenizer = IncrementalDetokenizer(smollm2_tokenizer, skip_special_tokens=True)
    assert [detokenizer.push(i) for i in ids] == ["Hi", ""]


def test_prompt_context_keeps_the_first_tokens_leading_space(sentencepiece_tokenizer: Tokenizer) -> None:
    prompt = sentencepiece_tokenizer.encode("Hello")
    output = sentencepiece_tokenizer.encode(
        "world again", add_special_tokens=False
    )  # "\u2581world", "\u2581again"
    assert (
        "".join(stream(sentencepiece_tokenizer, output)) == "world again"
    )  # decoded alone: text start, space dropped
    assert "".join(stream(sentencepiece_tokenizer, output, prompt_ids=prompt)) == " world again"


def test_prompt_context_is_not_emitted(smollm2_tokenizer: Tokenizer) -> None:
    prompt = smollm2_tokenizer.apply_chat_template([{"role": "user", "content": "Say hi 👋"}])
    output = smollm2_tokenizer.encode("Hi there 👋! 你好<|im_end|>")
    assert "".join(stream(smollm2_tokenizer, output, prompt_ids=prompt)) == smollm2_tokenizer.decode(output)


class CountingTokenizer:
    """Delegates to a Tokenizer, recording how many ids each decode call gets."""

    def __init__(self, inner: Tokenizer) -> None:
        self.inner = inner
        self.decoded_lengths: list[int] = []

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        self.decoded_lengths.append(len(ids))
        return self.inner.decode(ids, skip_special_tokens=skip_special_tokens)

    def is_special(self, token_id: int) -> bool:
        return self.inner.is_special(token_id)

    def token_to_bytes(self, token_id: int) -> bytes:
        return self.inner.token_to_bytes(token_id)


def test_work_per_token_does_not_grow_with_the_output(smollm2_tokenizer: Tokenizer) -> None:
    ids = smollm2_tokenizer.encode("Streaming 🎉 text, 你好, token by token. " * 60)
    counting = CountingTokenizer(smollm2_tokenizer)
    assert "".join(stream(counting, ids)) == smollm2_tokenizer.decode(ids)  # type: ignore[arg-type]
    assert len(ids) > 600
    assert max(counting.decoded_lengths) <= 8
    assert len(counting.decoded_lengths) <= 2 * len(ids) + 2
