"""llguidance matchers over the tiny test tokenizer: compile errors, masks, advancing, completion."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from jaxserve.errors import InvalidRequest
from jaxserve.modeling.tokenizer import Tokenizer
from jaxserve.sampling.bitmask import allowed_bitmask, full_bitmask
from jaxserve.sampling.grammar import GrammarRequest
from jaxserve.sampling.structured import GrammarCompiler
from tests.modeling.tiny_checkpoints import write_sentencepiece_tokenizer

BYTE_TOKEN_OFFSET = 5
"""The tiny tokenizer spells byte b as token 5 + b (`<0xHH>` after five specials)."""


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Tokenizer:
    directory: Path = tmp_path_factory.mktemp("structured-tok")
    write_sentencepiece_tokenizer(directory)
    return Tokenizer.from_path(directory)


@pytest.fixture(scope="module")
def compiler(tokenizer: Tokenizer) -> GrammarCompiler:
    return GrammarCompiler(tokenizer, model_vocab_size=tokenizer.vocab_size + 40)  # a padded model vocab


def ids(row: np.ndarray) -> list[int]:
    return [int(i) for i in np.nonzero(np.unpackbits(row.view(np.uint8), bitorder="little"))[0]]


def byte_token(char: str) -> int:
    return BYTE_TOKEN_OFFSET + ord(char)


def test_the_llguidance_tokenizer_is_built_once(compiler: GrammarCompiler) -> None:
    assert compiler.ll_tokenizer() is compiler.ll_tokenizer()


@pytest.mark.parametrize(
    ("request_", "fragment"),
    [
        (GrammarRequest("regex", "structured_outputs.regex", "(a"), "unclosed group"),
        (GrammarRequest("json", "response_format.json_schema.schema", {"type": "bogus"}), "bogus"),
        (GrammarRequest("grammar", "structured_outputs.grammar", "start: missing_rule"), "missing_rule"),
    ],
)
def test_invalid_grammars_are_400s_with_the_compilers_message(
    compiler: GrammarCompiler, request_: GrammarRequest, fragment: str
) -> None:
    with pytest.raises(InvalidRequest) as caught:
        compiler.compile(request_)
    assert caught.value.param == request_.param
    assert fragment in caught.value.message


def test_mask_follows_the_grammar_and_the_matcher_finishes(
    compiler: GrammarCompiler, tokenizer: Tokenizer
) -> None:
    matcher = compiler.compile(GrammarRequest("regex", "p", "[{][0-9]")).matcher()
    assert ids(matcher.allowed()) == [byte_token("{")]
    matcher.advance(byte_token("{"))
    allowed = ids(matcher.allowed())
    assert byte_token("7") in allowed and byte_token("a") not in allowed
    assert not matcher.finished
    matcher.advance(byte_token("7"))
    assert matcher.finished and matcher.accepting and not matcher.error


def test_tokens_past_the_tokenizer_are_never_allowed(compiler: GrammarCompiler, tokenizer: Tokenizer) -> None:
    matcher = compiler.compile(GrammarRequest("regex", "p", "[a-z ]*")).matcher()
    allowed = matcher.allowed()
    assert allowed.shape == full_bitmask(tokenizer.vocab_size + 40).shape
    assert max(ids(allowed)) < tokenizer.vocab_size


def test_matchers_of_one_grammar_are_independent(compiler: GrammarCompiler) -> None:
    compiled = compiler.compile(GrammarRequest("choice", "p", ["{", "}"]))
    first, second = compiled.matcher(), compiled.matcher()
    first.advance(byte_token("{"))
    assert first.finished and not second.finished


def test_step_bitmask_ands_with_other_restrictions_and_falls_back_to_the_grammar(
    compiler: GrammarCompiler, tokenizer: Tokenizer
) -> None:
    vocab = tokenizer.vocab_size + 40
    matcher = compiler.compile(GrammarRequest("regex", "p", "[0-9]")).matcher()
    only_seven = allowed_bitmask(vocab, [byte_token("7"), byte_token("x")])
    assert ids(matcher.step_bitmask(only_seven)) == [byte_token("7")]
    disjoint = allowed_bitmask(vocab, [byte_token("x")])
    assert ids(matcher.step_bitmask(disjoint)) == ids(matcher.allowed())


def test_a_refused_token_stops_the_matcher_with_an_error(compiler: GrammarCompiler) -> None:
    matcher = compiler.compile(GrammarRequest("regex", "p", "[0-9]+")).matcher()
    matcher.advance(byte_token("x"))
    assert matcher.finished and matcher.error
