"""Structural tags (xgrammar's format, which the spec's `response_format.format` carries) -> llguidance Lark.

A structural tag describes text with structured islands, e.g. free text in which every
`<function=f>…</function>` holds JSON arguments. Its `format` is a tree of
    const_string {value} · json_schema {json_schema} · regex {pattern} · grammar {grammar} · any_text
    sequence {elements} · or {elements} · tag {begin, content, end}
    triggered_tags {triggers, tags, at_least_one, stop_after_first}
    tags_with_separator {tags, separator, at_least_one, stop_after_first}
and the legacy form `{structures: [{begin, schema, end}], triggers}` is triggered_tags over JSON-schema
tags (xgrammar's `from_legacy_structural_tag`). The translation follows llguidance's own `StructTag`:
free text before a trigger is a lazy lexeme that ends at the first occurrence of the trigger, and
`any_text` inside a tag ends lazily at the tag's end string.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

SchemaTransform = Callable[[dict[str, Any]], dict[str, Any]]

ANY_TEXT = r"/(.|\n)*/"
"""Any text (llguidance regexes have no dot-all flag; `(.|\\n)` spells it)."""


class StructuralTagError(ValueError):
    """The structural tag is malformed; the message says where."""


def legacy_to_format(spec: Mapping[str, Any]) -> dict[str, Any]:
    """The legacy `{structures, triggers}` form as the triggered_tags format it means."""
    structures = spec.get("structures")
    if not isinstance(structures, list):
        raise StructuralTagError("'structures' must be a list")
    return {
        "type": "triggered_tags",
        "triggers": spec.get("triggers"),
        "tags": [
            {
                "type": "tag",
                "begin": structure.get("begin"),
                "content": {"type": "json_schema", "json_schema": structure.get("schema") or {}},
                "end": structure.get("end"),
            }
            for structure in structures
            if isinstance(structure, dict)
        ],
    }


def structural_tag_grammar(
    format_: Any, json_options: Mapping[str, Any], schema_transform: SchemaTransform | None = None
) -> str:
    """The llguidance grammar (Lark, or a JSON grammar list when it embeds Lark/GBNF grammars) for
    `format_`; `json_options` are the JSON compiler options of every embedded schema, which
    `schema_transform` (if given) rewrites first."""
    builder = _LarkBuilder(dict(json_options), schema_transform)
    start = builder.expr(format_, "format")
    lark = "%llguidance {}\nstart: " + start + "\n" + "\n".join(builder.rules) + "\n"
    if not builder.side_grammars:
        return lark
    return json.dumps(
        {"grammars": [{"name": "structural_tag", "lark_grammar": lark}, *builder.side_grammars]}
    )


class _LarkBuilder:
    """Emits one Lark expression per format node, adding helper rules as it goes."""

    def __init__(self, json_options: dict[str, Any], schema_transform: SchemaTransform | None) -> None:
        self.rules: list[str] = []
        self.side_grammars: list[dict[str, str]] = []
        self._json_options = json_options
        self._schema_transform = schema_transform
        self._count = 0

    def _name(self, prefix: str) -> str:
        self._count += 1
        return f"{prefix}_{self._count}"

    def expr(self, node: Any, path: str) -> str:
        if not isinstance(node, dict) or not isinstance(node.get("type"), str):
            raise StructuralTagError(f"{path} must be an object with a 'type'")
        kind = node["type"]
        handler = getattr(self, f"_{kind}", None)
        if handler is None:
            raise StructuralTagError(f"{path}: unknown format type {kind!r}")
        return str(handler(node, path))

    def _const_string(self, node: dict[str, Any], path: str) -> str:
        return _literal(_string(node, "value", path, allow_empty=False))

    def _json_schema(self, node: dict[str, Any], path: str) -> str:
        schema = node.get("json_schema")
        if isinstance(schema, bool):
            schema = {} if schema else {"not": {}}
        if not isinstance(schema, dict):
            raise StructuralTagError(f"{path}.json_schema must be an object")
        if self._schema_transform is not None:
            schema = self._schema_transform(schema)
        schema = {**schema, "x-guidance": {**self._json_options, **schema.get("x-guidance", {})}}
        return "%json " + json.dumps(schema)

    def _regex(self, node: dict[str, Any], path: str) -> str:
        pattern = _string(node, "pattern", path, allow_empty=False)
        return "/" + pattern.replace("/", "\\/") + "/"

    def _grammar(self, node: dict[str, Any], path: str) -> str:
        name = self._name("grammar")
        self.side_grammars.append(
            {"name": name, "lark_grammar": _string(node, "grammar", path, allow_empty=False)}
        )
        return "@" + name

    def _any_text(self, node: dict[str, Any], path: str) -> str:
        return ANY_TEXT

    def _sequence(self, node: dict[str, Any], path: str) -> str:
        return "(" + " ".join(self._elements(node, path)) + ")"

    def _or(self, node: dict[str, Any], path: str) -> str:
        return "(" + " | ".join(self._elements(node, path)) + ")"

    def _tag(self, node: dict[str, Any], path: str, *, skip_begin: int = 0) -> str:
        begin = _string(node, "begin", path, allow_empty=True)[skip_begin:]
        end = _string(node, "end", path, allow_empty=True)
        content = node.get("content")
        head = _literal(begin) if begin else ""
        if isinstance(content, dict) and content.get("type") == "any_text":
            # Free text up to the first `end`: a lazy lexeme, so the end string closes the tag.
            rule = self._name("tag_text")
            self.rules.append(f"{rule}[lazy]: {ANY_TEXT} {_literal(end)}" if end else f"{rule}: {ANY_TEXT}")
            return f"({head} {rule})"
        body = self.expr(content, f"{path}.content")
        return f"({head} {body} {_literal(end) if end else ''})"

    def _triggered_tags(self, node: dict[str, Any], path: str) -> str:
        triggers = node.get("triggers")
        if (
            not isinstance(triggers, list)
            or not triggers
            or not all(isinstance(t, str) and t for t in triggers)
        ):
            raise StructuralTagError(f"{path}.triggers must be a non-empty list of non-empty strings")
        text = self._name("TEXT").upper()
        self.rules.append(f"{text}: {ANY_TEXT}")
        options = []
        for index, tag in enumerate(self._tags(node, path)):
            begin = tag.get("begin", "")
            trigger = next((t for t in triggers if isinstance(begin, str) and begin.startswith(t)), None)
            if trigger is None:
                raise StructuralTagError(
                    f"{path}.tags.{index}: begin {begin!r} starts with none of {triggers}"
                )
            lead = self._name("trigger")
            # Text up to the first occurrence of the trigger (lazy), then the rest of the tag.
            self.rules.append(f"{lead}[lazy]: {text} {_literal(trigger)}")
            options.append(f"({lead} {self._tag(tag, f'{path}.tags.{index}', skip_begin=len(trigger))})")
        tags = "(" + " | ".join(options) + ")"
        at_least_one, stop_after_first = _flags(node)
        if stop_after_first:
            return tags if at_least_one else f"({tags} | {text})"
        return f"({tags}{'+' if at_least_one else '*'} {text})"

    def _tags_with_separator(self, node: dict[str, Any], path: str) -> str:
        tags = (
            "("
            + " | ".join(self._tag(tag, f"{path}.tags.{i}") for i, tag in enumerate(self._tags(node, path)))
            + ")"
        )
        separator = _string(node, "separator", path, allow_empty=True)
        at_least_one, stop_after_first = _flags(node)
        body = tags if stop_after_first else f"({tags} ({_literal(separator) if separator else ''} {tags})*)"
        return body if at_least_one else f"({body})?"

    def _elements(self, node: dict[str, Any], path: str) -> list[str]:
        elements = node.get("elements")
        if not isinstance(elements, list) or not elements:
            raise StructuralTagError(f"{path}.elements must be a non-empty list")
        return [self.expr(element, f"{path}.elements.{i}") for i, element in enumerate(elements)]

    @staticmethod
    def _tags(node: dict[str, Any], path: str) -> list[dict[str, Any]]:
        tags = node.get("tags")
        if not isinstance(tags, list) or not tags or not all(isinstance(t, dict) for t in tags):
            raise StructuralTagError(f"{path}.tags must be a non-empty list of tags")
        return tags


def _flags(node: dict[str, Any]) -> tuple[bool, bool]:
    return bool(node.get("at_least_one", False)), bool(node.get("stop_after_first", False))


def _string(node: dict[str, Any], key: str, path: str, *, allow_empty: bool) -> str:
    value = node.get(key)
    if not isinstance(value, str) or (not value and not allow_empty):
        raise StructuralTagError(f"{path}.{key} must be a {'' if allow_empty else 'non-empty '}string")
    return value


def _literal(text: str) -> str:
    """A Lark string literal (llguidance reads JSON string escapes)."""
    return json.dumps(text)
