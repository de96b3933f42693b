"""What a structured-output request constrains the output to, and the llguidance grammar that says it.

A `GrammarRequest` is the server-side, request-format-free description (the HTTP layer builds one from
`response_format`, `structured_outputs` or a forced `tool_choice`); `grammar_text` turns it into the
grammar string llguidance compiles, following vLLM's guidance backend (`serialize_guidance_grammar`):
JSON schemas with flexible whitespace unless `disable_any_whitespace`, `json_object` as the schema
`{"type": "object"}`, choices as a Lark alternation of string literals, Lark/GBNF grammars through
llguidance's converter; structural tags (both forms) through `jaxserve.sampling.structural_tag`.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from typing import Any, Literal

import llguidance

from jaxserve.errors import InvalidRequest
from jaxserve.sampling.structural_tag import legacy_to_format, structural_tag_grammar

GrammarKind = Literal["json", "json_object", "regex", "choice", "grammar", "structural_tag"]

_SCHEMA_MAPS = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")
"""Keywords whose value maps names to subschemas."""

_SUBSCHEMAS = (
    "additionalProperties",
    "unevaluatedProperties",
    "propertyNames",
    "contains",
    "additionalItems",
    "unevaluatedItems",
    "not",
    "if",
    "then",
    "else",
    "items",
    "prefixItems",
    "allOf",
    "anyOf",
    "oneOf",
)
"""Keywords whose value is a subschema or a list of them."""


MAX_SPEC_CHARS = 512 * 1024
"""Largest constraint (schema as JSON text, regex, grammar, choices) accepted: room for 128 tool schemas
of a few KiB each, which a forced tool choice joins into one."""

MAX_SPEC_DEPTH = 128
"""Deepest object/array nesting of a JSON schema or structural tag, counting every JSON level (a nested
object property adds two: `properties` and the property's schema); real schemas stay under ~30."""


@dataclass(frozen=True)
class GrammarRequest:
    """One output constraint. `param` names the request field it came from (for 400 errors).

    `spec` is a JSON schema (dict or JSON text) for "json", a regex for "regex", the strings for
    "choice", Lark or GBNF text for "grammar", and the `{"structures", "triggers"}` object for
    "structural_tag"; "json_object" needs none.
    """

    kind: GrammarKind
    param: str
    spec: Any = field(default=None, hash=False)
    whitespace_flexible: bool = True  # False: vLLM's disable_any_whitespace (compact JSON)
    whitespace_pattern: str | None = None  # a regex for the whitespace JSON may contain
    disable_additional_properties: bool = False  # objects without additionalProperties get it false


def grammar_text(request: GrammarRequest) -> str:
    """The llguidance grammar for `request`; malformed specs raise InvalidRequest naming its param.

    Only the shape is checked here: llguidance validates the grammar itself when it is compiled
    against the tokenizer (`jaxserve.sampling.structured`).
    """
    check_spec_size(request)
    try:
        return _grammar_text(request)
    except InvalidRequest:
        raise
    except (ValueError, TypeError, KeyError, AssertionError) as exc:  # llguidance's helpers raise these
        raise InvalidRequest(f"invalid {request.kind} constraint: {exc}", param=request.param) from exc


def check_spec_size(request: GrammarRequest) -> None:
    """Refuse a constraint larger than MAX_SPEC_CHARS (400). Its nesting is checked once it is parsed
    (`_parsed_json`): llguidance compiles lazily and bounds its own per-token work, but building a grammar
    from a multi-megabyte or thousands-deep schema costs host CPU (and Python recursion) before that."""
    spec = request.spec
    size = len(spec) if isinstance(spec, str) else len(json.dumps(spec)) if spec is not None else 0
    if size > MAX_SPEC_CHARS:
        raise InvalidRequest(
            f"the {request.kind} constraint is {size} characters long; at most {MAX_SPEC_CHARS} are allowed",
            param=request.param,
        )


def _parsed_json(request: GrammarRequest, what: str) -> Any:
    """The spec of a JSON-valued constraint (sent as JSON text or as a value), checked to be nested no
    deeper than MAX_SPEC_DEPTH."""
    spec = request.spec
    too_deep = (
        f"the {request.kind} constraint is nested more than {MAX_SPEC_DEPTH} levels deep; at most "
        f"{MAX_SPEC_DEPTH} are allowed"
    )
    if isinstance(spec, str):
        try:
            spec = json.loads(spec)
        except json.JSONDecodeError as exc:
            raise InvalidRequest(f"the {what} is not valid JSON: {exc}", param=request.param) from exc
        except RecursionError:  # the parser recurses per level: far deeper than the limit
            raise InvalidRequest(too_deep, param=request.param) from None
    depth = _nesting_depth(spec)
    if depth > MAX_SPEC_DEPTH:
        raise InvalidRequest(
            f"the {request.kind} constraint is nested {depth} levels deep; at most {MAX_SPEC_DEPTH} are "
            "allowed",
            param=request.param,
        )
    return spec


def _nesting_depth(value: Any) -> int:
    """How many JSON objects/arrays deep `value` goes (iterative: the value may be deeper than Python's
    recursion limit allows to walk recursively)."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children: Any = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        deepest = max(deepest, depth + 1)
        if deepest > MAX_SPEC_DEPTH:
            return deepest
        stack.extend((child, depth + 1) for child in children)
    return deepest


def _grammar_text(request: GrammarRequest) -> str:
    if request.kind == "json":
        return _json_schema_grammar(_schema(request), request)
    if request.kind == "json_object":
        return _json_schema_grammar({"type": "object"}, request)
    if request.kind == "regex":
        return llguidance.grammar_from("regex", _text(request))
    if request.kind == "choice":
        choices = request.spec
        if not isinstance(choices, list) or not choices or not all(isinstance(c, str) for c in choices):
            raise InvalidRequest("choice must be a non-empty list of strings", param=request.param)
        return llguidance.grammar_from("choice", json.dumps(choices))
    if request.kind == "grammar":
        return llguidance.grammar_from("grammar", _text(request))
    if request.kind == "structural_tag":
        return _structural_tag(request)
    raise ValueError(f"unknown grammar kind {request.kind!r}")


def _json_schema_grammar(schema: dict[str, Any], request: GrammarRequest) -> str:
    """A JSON-schema grammar with the request's whitespace and additionalProperties options."""
    if request.disable_additional_properties:
        schema = without_additional_properties(schema)
    # As "defaults", so a schema's own "x-guidance" options still win (llguidance's precedence).
    return llguidance.LLMatcher.grammar_from_json_schema(schema, defaults=_json_options(request))  # type: ignore[arg-type]


def _json_options(request: GrammarRequest) -> dict[str, Any]:
    """llguidance's JSON compiler options for the request's whitespace settings."""
    options: dict[str, Any] = {"whitespace_flexible": request.whitespace_flexible}
    if request.whitespace_pattern is not None:
        options["whitespace_pattern"] = request.whitespace_pattern
    return options


def without_additional_properties(schema: dict[str, Any]) -> dict[str, Any]:
    """A copy of `schema` where every object schema that lists properties and says nothing about
    additionalProperties forbids them (vLLM's `disable_additional_properties`)."""
    result = copy.deepcopy(schema)
    _close_objects(result)
    return result


def _close_objects(node: Any) -> None:
    if isinstance(node, list):
        for item in node:
            _close_objects(item)
        return
    if not isinstance(node, dict):
        return
    for key in _SCHEMA_MAPS:
        value = node.get(key)
        if isinstance(value, dict):
            for subschema in value.values():
                _close_objects(subschema)
    for key in _SUBSCHEMAS:
        _close_objects(node.get(key))
    if "additionalProperties" not in node and isinstance(node.get("properties"), dict):
        node["additionalProperties"] = False


def _schema(request: GrammarRequest) -> dict[str, Any]:
    spec = _parsed_json(request, "JSON schema")
    if isinstance(spec, bool):
        spec = {} if spec else {"not": {}}  # JSON Schema's boolean schemas
    if not isinstance(spec, dict):
        raise InvalidRequest("the JSON schema must be an object", param=request.param)
    return spec


def _text(request: GrammarRequest) -> str:
    if not isinstance(request.spec, str) or not request.spec:
        raise InvalidRequest(f"the {request.kind} must be a non-empty string", param=request.param)
    return request.spec


def _structural_tag(request: GrammarRequest) -> str:
    """Either form of structural tag (see jaxserve.sampling.structural_tag): `{"format": ...}` (the
    response_format's, or structured_outputs' JSON text with a "format") or the legacy
    `{"structures", "triggers"}`."""
    spec = _parsed_json(request, "structural tag")
    if not isinstance(spec, dict):
        raise InvalidRequest("a structural tag must be an object", param=request.param)
    if "format" in spec:
        format_ = spec["format"]
    elif "structures" in spec:
        format_ = legacy_to_format(spec)
    else:
        raise InvalidRequest(
            "a structural tag needs a 'format' or 'structures' and 'triggers'", param=request.param
        )
    transform = without_additional_properties if request.disable_additional_properties else None
    return structural_tag_grammar(format_, _json_options(request), transform)
