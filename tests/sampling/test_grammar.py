"""Structured-output requests -> llguidance grammars (vLLM's guidance-backend mapping) and their 400s."""

from __future__ import annotations

import json
from typing import Any

import pytest

from jaxserve.errors import InvalidRequest
from jaxserve.sampling.grammar import (
    MAX_SPEC_CHARS,
    MAX_SPEC_DEPTH,
    GrammarKind,
    GrammarRequest,
    grammar_text,
    without_additional_properties,
)


def json_options(grammar: str) -> dict[str, Any]:
    return json.loads(grammar)["grammars"][0]["json_schema"]["x-guidance"]


def test_json_schema_whitespace_is_flexible_unless_disabled() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    assert json_options(grammar_text(GrammarRequest("json", "p", schema)))["whitespace_flexible"] is True
    compact = GrammarRequest("json", "p", schema, whitespace_flexible=False)
    assert json_options(grammar_text(compact))["whitespace_flexible"] is False


def test_whitespace_pattern_reaches_the_json_compiler() -> None:
    grammar = grammar_text(GrammarRequest("json", "p", {"type": "object"}, whitespace_pattern=r"[ ]?"))
    assert json_options(grammar)["whitespace_pattern"] == "[ ]?"


def test_json_schema_may_be_json_text() -> None:
    grammar = grammar_text(GrammarRequest("json", "p", '{"type": "integer"}'))
    assert json.loads(grammar)["grammars"][0]["json_schema"]["type"] == "integer"


def test_json_object_is_any_object() -> None:
    grammar = grammar_text(GrammarRequest("json_object", "response_format"))
    assert json.loads(grammar)["grammars"][0]["json_schema"]["type"] == "object"


def test_disable_additional_properties_closes_every_object_with_properties() -> None:
    schema = {
        "type": "object",
        "properties": {"inner": {"type": "object", "properties": {"x": {}}}, "open": {"type": "object"}},
        "$defs": {"d": {"properties": {"y": {}}, "additionalProperties": True}},
        "anyOf": [{"properties": {"z": {}}}],
    }
    closed = without_additional_properties(schema)
    assert closed["additionalProperties"] is False
    assert closed["properties"]["inner"]["additionalProperties"] is False
    assert "additionalProperties" not in closed["properties"]["open"]  # lists no properties
    assert closed["$defs"]["d"]["additionalProperties"] is True  # said so itself
    assert closed["anyOf"][0]["additionalProperties"] is False
    assert "additionalProperties" not in schema  # the request's schema is not modified


def test_choice_becomes_an_alternation_of_literals() -> None:
    grammar = grammar_text(GrammarRequest("choice", "structured_outputs.choice", ['yes "really"', "no"]))
    assert '"yes \\"really\\""' in grammar and '"no"' in grammar


@pytest.mark.parametrize(
    ("kind", "spec"),
    [
        ("json", "{not json"),
        ("json", [1, 2]),
        ("choice", []),
        ("choice", ["a", 1]),
        ("regex", ""),
        ("grammar", 7),
        ("structural_tag", {"neither": "form"}),
        ("structural_tag", {"structures": [{"begin": "<b>", "end": "</b>"}], "triggers": ["<a"]}),
        ("structural_tag", {"structures": [], "triggers": ["<a"]}),
    ],
)
def test_malformed_specs_are_400s_naming_the_field(kind: Any, spec: Any) -> None:
    with pytest.raises(InvalidRequest) as caught:
        grammar_text(GrammarRequest(kind, "the.field", spec))
    assert caught.value.param == "the.field"


def test_legacy_structural_tag_becomes_a_lazy_trigger_grammar() -> None:
    """(Matching is tested in test_structural_tag.)"""
    spec = {
        "structures": [{"begin": "<function=f>", "schema": {"type": "object"}, "end": "</function>"}],
        "triggers": ["<function="],
    }
    grammar = grammar_text(GrammarRequest("structural_tag", "response_format", spec))
    assert "lazy" in grammar and "%json" in grammar and "</function>" in grammar


def _nested_schema(levels: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object"}
    inner = schema
    for _ in range(levels):
        child: dict[str, Any] = {"type": "object"}
        inner["properties"] = {"a": child}
        inner = child
    return schema


def test_a_schema_nested_too_deep_is_a_400_naming_its_param() -> None:
    deep = _nested_schema(MAX_SPEC_DEPTH)  # two JSON levels per nested property
    with pytest.raises(InvalidRequest, match="nested") as caught:
        grammar_text(GrammarRequest("json", "response_format", deep))
    assert caught.value.param == "response_format"
    with pytest.raises(InvalidRequest, match="nested"):  # the same schema sent as JSON text
        grammar_text(GrammarRequest("json", "structured_outputs.json", json.dumps(deep)))


def test_a_reasonably_nested_schema_compiles() -> None:
    assert grammar_text(GrammarRequest("json", "response_format", _nested_schema(20)))


@pytest.mark.parametrize("kind", ["regex", "grammar"])
def test_an_oversized_constraint_is_a_400(kind: GrammarKind) -> None:
    with pytest.raises(InvalidRequest, match="characters long") as caught:
        grammar_text(GrammarRequest(kind, "structured_outputs", "a" * (MAX_SPEC_CHARS + 1)))
    assert caught.value.param == "structured_outputs"


def test_an_oversized_choice_list_is_a_400() -> None:
    choices = ["x" * 1000] * (MAX_SPEC_CHARS // 1000 + 1)
    with pytest.raises(InvalidRequest, match="characters long"):
        grammar_text(GrammarRequest("choice", "structured_outputs.choice", choices))


@pytest.mark.parametrize("kind", ["json", "structural_tag"])
def test_json_text_nested_beyond_the_parser_is_a_400_not_a_crash(kind: GrammarKind) -> None:
    """Within the size limit, `[[[[…` as JSON text is deep enough to exhaust the parser's recursion."""
    deep = "[" * 100_000 + "]" * 100_000
    with pytest.raises(InvalidRequest, match="nested") as caught:
        grammar_text(GrammarRequest(kind, "structured_outputs", deep))
    assert caught.value.param == "structured_outputs"
