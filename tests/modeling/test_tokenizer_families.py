"""Round trips per tokenizer family: byte-level BPE (SmolLM2, the default model), sentencepiece-style BPE
with byte fallback (the tiny Llama 2-style tokenizer) and Gemma 3's GGUF sentencepiece vocabulary (when the
optional package is installed). Multilingual, emoji and whitespace text encodes and decodes back to itself,
streams through the engine's incremental detokenizer to the same text as a one-shot decode, and each
family's special tokens are single ids that decoding keeps or drops on request."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from jaxserve.engine.detokenizer import REPLACEMENT_CHAR, IncrementalDetokenizer
from jaxserve.modeling.tokenizer import Tokenizer

TEXTS = (
    "Hello, world! How are you today?",
    "héllo wörld, café crème, São Paulo, ñandú, Ærøskøbing, Straße",
    "中文测试：你好，世界！日本語のテキストです。한국어 문장도 있어요.",
    "Emoji 😀🎉 family 👨‍👩‍👧‍👦 flags 🇫🇷🇯🇵 skin tone 👍🏽 keycap 1️⃣",
    "Ελληνικά, Русский текст, العربية, हिन्दी, עברית, ภาษาไทย",
    "code:\n    def f(x):\n        return x ** 2  # 🐍\n\n\ttabs\r\n",
    "   leading and trailing spaces   ",
    "a  b   c    d\u00a0nbsp\u3000ideographic space",
)

SPECIAL_TOKENS = {"smollm2": "<|im_end|>", "sentencepiece": "</s>", "gemma3": "<end_of_turn>"}
"""A special token of each family that ends a turn: decoding drops it under skip_special_tokens."""

FAMILIES = tuple(SPECIAL_TOKENS)


@pytest.fixture(scope="module")
def tokenizer_of(request: pytest.FixtureRequest) -> Callable[[str], Tokenizer]:
    """family -> its tokenizer; the Gemma one (a session fixture, skipped when absent) is built on demand."""
    fixtures = {
        "smollm2": "smollm2_tokenizer",
        "sentencepiece": "sentencepiece_tokenizer",
        "gemma3": "gemma3_tokenizer",
    }
    return lambda family: request.getfixturevalue(fixtures[family])


def _stream(tokenizer: Tokenizer, ids: list[int], skip_special_tokens: bool) -> str:
    detokenizer = IncrementalDetokenizer(tokenizer, skip_special_tokens)
    pieces = [detokenizer.push(i) for i in ids]
    pieces.append(detokenizer.flush())
    assert not any(REPLACEMENT_CHAR in piece for piece in pieces)  # never half a character
    return "".join(pieces)


@pytest.mark.parametrize("text", TEXTS)
@pytest.mark.parametrize("family", FAMILIES)
def test_text_round_trips_through_encode_and_decode(
    family: str, text: str, tokenizer_of: Callable[[str], Tokenizer]
) -> None:
    tokenizer = tokenizer_of(family)
    ids = tokenizer.encode(text)
    assert tokenizer.decode(ids) == text
    assert b"".join(tokenizer.token_to_bytes(i) for i in ids if not tokenizer.is_special(i)).decode() in (
        text,
        " " + text,  # sentencepiece-style vocabularies that prepend a space spell it in the first token
    )


@pytest.mark.parametrize("skip_special_tokens", [True, False])
@pytest.mark.parametrize("text", TEXTS)
@pytest.mark.parametrize("family", FAMILIES)
def test_incremental_detokenizer_equals_one_shot_decode(
    family: str, text: str, skip_special_tokens: bool, tokenizer_of: Callable[[str], Tokenizer]
) -> None:
    tokenizer = tokenizer_of(family)
    ids = tokenizer.encode(text + SPECIAL_TOKENS[family])  # BOS (where added) in front, a special behind
    streamed = _stream(tokenizer, ids, skip_special_tokens)
    assert streamed == tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)
    if skip_special_tokens:
        assert streamed == text


@pytest.mark.parametrize("family", FAMILIES)
def test_special_token_is_one_id_kept_or_dropped(
    family: str, tokenizer_of: Callable[[str], Tokenizer]
) -> None:
    tokenizer = tokenizer_of(family)
    special = SPECIAL_TOKENS[family]
    ids = tokenizer.encode(f"Hi 👋{special}", add_special_tokens=False)
    special_id = tokenizer.hf.convert_tokens_to_ids(special)
    assert ids[-1] == special_id and ids.count(special_id) == 1
    assert tokenizer.is_special(special_id)
    assert tokenizer.decode(ids, skip_special_tokens=True) == "Hi 👋"
    assert tokenizer.decode(ids, skip_special_tokens=False) == f"Hi 👋{special}"
    assert _stream(tokenizer, ids, skip_special_tokens=False) == f"Hi 👋{special}"
