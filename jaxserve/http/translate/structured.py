"""`response_format`, `structured_outputs` and a forced `tool_choice` -> at most one output constraint.

vLLM's rules (`ChatCompletionRequest.to_sampling_params`, `StructuredOutputsParams`): `response_format`
fills `structured_outputs` (json_object -> `json_object`, json_schema -> `json`, structural_tag ->
`structural_tag`), and a request may use one kind of constraint only, so a response format together
with a `structured_outputs` constraint, two kinds in `structured_outputs`, or a constraint together with
a named or "required" tool choice (which constrains the output itself) is a 400. `structured_outputs`'
options (`disable_any_whitespace`, `disable_additional_properties`, `whitespace_pattern`) apply to
whichever JSON constraint is chosen; llguidance honours `whitespace_pattern` too (vLLM's guidance
backend drops it).
"""

from __future__ import annotations

from typing import Any

from jaxserve.errors import InvalidRequest
from jaxserve.http.protocol.chat_request import ChatCompletionRequest
from jaxserve.http.protocol.completion import CompletionRequest
from jaxserve.http.protocol.options import (
    LegacyStructuralTagResponseFormat,
    ResponseFormat,
    StructuralTagResponseFormat,
    StructuredOutputsParams,
)
from jaxserve.http.translate.forced_tools import forced_tool_schema
from jaxserve.sampling.grammar import GrammarKind, GrammarRequest

_KINDS: tuple[tuple[GrammarKind, str], ...] = (
    ("json", "json"),
    ("regex", "regex"),
    ("choice", "choice"),
    ("grammar", "grammar"),
    ("json_object", "json_object"),
    ("structural_tag", "structural_tag"),
)
"""Each constraint kind of `structured_outputs` and its request spelling."""

_BACKENDS = (None, "auto", "guidance", "llguidance")
"""`structured_outputs._backend` values this server can honour: it has the llguidance backend only."""


def structured_request(request: ChatCompletionRequest | CompletionRequest) -> GrammarRequest | None:
    """The request's output constraint, or None; conflicting or malformed constraints are a 400.
    (Legacy completions have no tools, so only response_format and structured_outputs apply.)"""
    options = request.structured_outputs or StructuredOutputsParams()
    _check_backend(options)
    from_outputs = _structured_outputs_constraint(options)
    from_format = _response_format_constraint(request)
    if from_outputs is not None and from_format is not None:
        raise InvalidRequest(
            f"response_format ({from_format[0]}) and structured_outputs ({from_outputs[0]}) both constrain "
            "the output; use only one kind of structured outputs constraint",
            param="structured_outputs",
        )
    from_tools = forced_tool_schema(request) if isinstance(request, ChatCompletionRequest) else None
    chosen = from_outputs or from_format
    if from_tools is not None:
        if chosen is not None:
            raise InvalidRequest(
                "You can only either use constraints for structured outputs or tools, not both: a named or "
                "required tool_choice already constrains the output",
                param="tool_choice",
            )
        chosen = ("json", from_tools, "tool_choice")
    if chosen is None:
        return None
    kind, spec, param = chosen
    if request.use_beam_search:
        raise InvalidRequest(
            "structured outputs cannot be combined with use_beam_search (beams are ranked, not matched "
            "against a grammar)",
            param="use_beam_search",
        )
    return GrammarRequest(
        kind=kind,
        param=param,
        spec=spec,
        whitespace_flexible=not options.disable_any_whitespace,
        whitespace_pattern=options.whitespace_pattern,
        disable_additional_properties=options.disable_additional_properties,
    )


_Constraint = tuple[GrammarKind, Any, str]
"""(kind, spec, the request field it came from)."""


def _structured_outputs_constraint(options: StructuredOutputsParams) -> _Constraint | None:
    values = {
        "json": options.json_spec,
        "regex": options.regex,
        "choice": options.choice,
        "grammar": options.grammar,
        # json_object=false asks for nothing (vLLM would fail it as "no constraint given").
        "json_object": True if options.json_object else None,
        "structural_tag": options.structural_tag,
    }
    chosen = [(kind, name) for kind, name in _KINDS if values[name] is not None]
    if len(chosen) > 1:
        names = ", ".join(name for _, name in chosen)
        raise InvalidRequest(
            f"You can only use one kind of structured outputs constraint but multiple are specified: {names}",
            param="structured_outputs",
        )
    if not chosen:
        return None
    kind, name = chosen[0]
    return kind, values[name], f"structured_outputs.{name}"


def _response_format_constraint(request: ChatCompletionRequest | CompletionRequest) -> _Constraint | None:
    response_format = request.response_format
    if response_format is None:
        return None
    if isinstance(response_format, LegacyStructuralTagResponseFormat):
        spec = response_format.model_dump(by_alias=True)
        return "structural_tag", spec, "response_format"
    if isinstance(response_format, StructuralTagResponseFormat):
        return "structural_tag", {"format": response_format.format}, "response_format.format"
    assert isinstance(response_format, ResponseFormat)
    if response_format.type == "text":
        return None
    if response_format.type == "json_object":
        return "json_object", None, "response_format"
    json_schema = response_format.json_schema
    if json_schema is None:
        raise InvalidRequest(
            "When response_format type is 'json_schema', the 'json_schema' field must be provided.",
            param="response_format.json_schema",
        )
    if json_schema.json_schema is None:
        raise InvalidRequest(
            "a json_schema response format needs its 'schema'", param="response_format.json_schema.schema"
        )
    # `strict` changes nothing here: constrained decoding enforces the schema either way.
    return "json", json_schema.json_schema, "response_format.json_schema.schema"


def _check_backend(options: StructuredOutputsParams) -> None:
    if options.backend not in _BACKENDS:
        raise InvalidRequest(
            f"structured outputs backend {options.backend!r} is not available; this server uses llguidance",
            param="structured_outputs._backend",
        )
