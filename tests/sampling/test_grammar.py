"""Structured-output requests -> llguidance grammars (vLLM's guidance-backend mapping) and their 400s."""

from __future__ import annotations

import json
from typing import Any

import pytest

from jaxserve.errors import InvalidRequest
from jaxserve.sampling.grammar import GrammarRequest, grammar_text, without_additional_properties


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
