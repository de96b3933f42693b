"""Structural tags (xgrammar's format and the legacy form) -> llguidance grammars that accept what they say."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import llguidance
import llguidance.hf
import pytest

from jaxserve.errors import InvalidRequest
from jaxserve.modeling.tokenizer import Tokenizer
from jaxserve.sampling.grammar import GrammarRequest, grammar_text
from tests.modeling.tiny_checkpoints import write_sentencepiece_tokenizer

CALL = {
    "type": "tag",
    "begin": "<function=f>",
    "content": {
        "type": "json_schema",
        "json_schema": {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]},
    },
    "end": "</function>",
}
TRIGGERED = {"type": "triggered_tags", "triggers": ["<function="], "tags": [CALL]}


@pytest.fixture(scope="module")
def ll_tokenizer(tmp_path_factory: pytest.TempPathFactory) -> llguidance.LLTokenizer:
    directory: Path = tmp_path_factory.mktemp("tag-tok")
    write_sentencepiece_tokenizer(directory)
    tokenizer = Tokenizer.from_path(directory)
    return llguidance.hf.from_tokenizer(tokenizer.hf, n_vocab=tokenizer.vocab_size, eos_token=2)


def accepts(ll_tokenizer: llguidance.LLTokenizer, spec: dict[str, Any], text: str) -> bool:
    """Whether `text` (spelled in byte tokens) is a complete output of the structural tag."""
    matcher = llguidance.LLMatcher(ll_tokenizer, grammar_text(GrammarRequest("structural_tag", "p", spec)))
    assert not matcher.is_error(), matcher.get_error()
    return matcher.consume_tokens([5 + byte for byte in text.encode()]) and matcher.is_accepting()


@pytest.mark.parametrize(
    ("format_", "good", "bad"),
    [
        ({"type": "const_string", "value": "Hi!"}, "Hi!", "Hi"),
        (
            {
                "type": "sequence",
                "elements": [{"type": "const_string", "value": "n="}, {"type": "regex", "pattern": "[0-9]+"}],
            },
            "n=42",
            "n=x",
        ),
        (
            {
                "type": "or",
                "elements": [
                    {"type": "const_string", "value": "a/b"},
                    {"type": "json_schema", "json_schema": {"type": "integer"}},
                ],
            },
            "7",
            "c",
        ),
        (
            {"type": "tag", "begin": "<t>", "content": {"type": "any_text"}, "end": "</t>"},
            "<t>a < b</t>",
            "<t>a",
        ),
        (TRIGGERED, 'free <function=f>{"a": 1}</function> text', 'free <function=f>{"b": 1}</function>'),
        ({**TRIGGERED, "at_least_one": True}, '<function=f>{"a": 1}</function>', "no call"),
        (
            {**TRIGGERED, "stop_after_first": True},
            'x <function=f>{"a": 2}</function>',
            'x <function=f>{"a": 2}</function> y',
        ),
        (
            {
                "type": "tags_with_separator",
                "separator": ";",
                "tags": [
                    {
                        "type": "tag",
                        "begin": "<n>",
                        "content": {"type": "grammar", "grammar": "start: /[0-9]+/"},
                        "end": "</n>",
                    }
                ],
            },
            "<n>1</n>;<n>23</n>",
            "<n>1</n> <n>2</n>",
        ),
    ],
)
def test_formats_accept_what_they_describe(
    ll_tokenizer: llguidance.LLTokenizer, format_: dict[str, Any], good: str, bad: str
) -> None:
    assert accepts(ll_tokenizer, {"format": format_}, good)
    assert not accepts(ll_tokenizer, {"format": format_}, bad)


def test_legacy_form_is_triggered_tags_over_schemas(ll_tokenizer: llguidance.LLTokenizer) -> None:
    legacy = {
        "structures": [
            {"begin": "<function=f>", "schema": CALL["content"]["json_schema"], "end": "</function>"}
        ],
        "triggers": ["<function="],
    }  # type: ignore[index]
    assert accepts(ll_tokenizer, legacy, 'a <function=f>{"a": 3}</function>')
    assert not accepts(ll_tokenizer, legacy, "a <function=g>")


@pytest.mark.parametrize(
    "format_",
    [
        {"type": "nope"},
        {"type": "sequence", "elements": []},
        {"type": "triggered_tags", "triggers": ["<x"], "tags": [CALL]},
        {"type": "tag", "begin": "<a>", "content": {"type": "regex", "pattern": ""}, "end": "</a>"},
        "not an object",
    ],
)
def test_malformed_formats_are_400s(format_: Any) -> None:
    with pytest.raises(InvalidRequest) as caught:
        grammar_text(GrammarRequest("structural_tag", "response_format.format", {"format": format_}))
    assert caught.value.param == "response_format.format"
