"""Request sub-objects that are neither messages nor tools: response format, stream options,
structured-output constraints and logits-processor constructors."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Discriminator, Field, Tag

from jaxserve.http.protocol.base import ClosedModel, ExtensibleModel, ProtocolModel


class JsonSchemaResponseFormat(ExtensibleModel):
    name: str
    description: str | None = None
    json_schema: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None


class ResponseFormat(ExtensibleModel):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaResponseFormat | None = None


class StructuralTagResponseFormat(ExtensibleModel):
    type: Literal["structural_tag"]
    format: Any


class LegacyStructuralTag(ExtensibleModel):
    begin: str
    structural_tag_schema: dict[str, Any] | None = Field(default=None, alias="schema")
    end: str


class LegacyStructuralTagResponseFormat(ExtensibleModel):
    type: Literal["structural_tag"]
    structures: list[LegacyStructuralTag]
    triggers: list[str]


def _response_format_tag(value: Any) -> str | None:
    """`structural_tag` has two shapes; the legacy one is the one listing `structures`."""
    if isinstance(value, BaseModel):
        value = {"type": getattr(value, "type", None), "structures": getattr(value, "structures", None)}
    if not isinstance(value, dict):
        return None
    if value.get("type") == "structural_tag":
        return (
            "format:legacy_structural_tag" if value.get("structures") is not None else "format:structural_tag"
        )
    return "format:response_format"


AnyResponseFormat = Annotated[
    Annotated[ResponseFormat, Tag("format:response_format")]
    | Annotated[StructuralTagResponseFormat, Tag("format:structural_tag")]
    | Annotated[LegacyStructuralTagResponseFormat, Tag("format:legacy_structural_tag")],
    Discriminator(
        _response_format_tag,
        custom_error_type="invalid_response_format",
        custom_error_message="response_format must be an object with a 'type'",
    ),
]


class StreamOptions(ExtensibleModel):
    include_usage: bool | None = True
    continuous_usage_stats: bool | None = False


class StructuredOutputsParams(ProtocolModel):
    """vLLM's structured-output constraints (exactly one of json/regex/choice/grammar/... is meant)."""

    json_spec: str | dict[str, Any] | None = Field(default=None, alias="json")
    regex: str | None = None
    choice: list[str] | None = None
    grammar: str | None = None
    json_object: bool | None = None
    disable_fallback: bool = False
    disable_any_whitespace: bool = False
    disable_additional_properties: bool = False
    whitespace_pattern: str | None = None
    structural_tag: str | None = None
    backend: str | None = Field(default=None, alias="_backend")
    backend_was_auto: bool = Field(default=False, alias="_backend_was_auto")


class LogitsProcessorConstructor(ClosedModel):
    qualname: str
    args: list[Any] | None = None
    kwargs: dict[str, Any] | None = None
