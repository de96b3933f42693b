"""`tools` and a `tool_choice` that forces calls (a named function, or "required"), request side.

vLLM's rules (`ChatCompletionRequest.check_tool_usage`, `tool_parsers.utils.get_json_schema_from_tools`):
`tools` must not be empty; a `tool_choice` other than "none" needs `tools`, and a named one must name one
of them; tools without a `tool_choice` mean "auto". The tools are rendered into the prompt through the
chat template's `tools` variable whatever the choice. A forced choice constrains the output with a JSON
schema: a named function's output is exactly its arguments object; "required" makes the output a
non-empty JSON array of `{"name": <one of the tools>, "parameters": <its arguments>}` objects.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from jaxserve.errors import InvalidRequest
from jaxserve.http.protocol.chat_request import ChatCompletionRequest
from jaxserve.http.protocol.tools import ChatCompletionNamedToolChoiceParam, ChatCompletionToolsParam

EMPTY_PARAMETERS: dict[str, Any] = {"type": "object", "properties": {}}
"""The arguments of a function declared without `parameters` (vLLM's default)."""

ToolChoice = str | ChatCompletionNamedToolChoiceParam


@dataclass(frozen=True)
class ForcedToolChoice:
    """A tool choice whose output is tool calls: `name` for a named function, None for "required"."""

    name: str | None = None

    @property
    def required(self) -> bool:
        return self.name is None


def effective_tool_choice(request: ChatCompletionRequest) -> ToolChoice:
    """The tool choice in force: vLLM's "auto" when tools come without one; "none" for a null one."""
    if "tool_choice" not in request.model_fields_set and request.tools:
        return "auto"
    return request.tool_choice or "none"


def check_tools(request: ChatCompletionRequest) -> None:
    """vLLM's validation of `tools` against `tool_choice` (400s naming the field)."""
    if request.tools is not None and not request.tools:
        raise InvalidRequest(
            "`tools` must not be an empty array. Either provide at least one tool or omit the field entirely.",
            param="tools",
        )
    choice = effective_tool_choice(request)
    if choice == "none":
        return
    if not request.tools:
        raise InvalidRequest("When using `tool_choice`, `tools` must be set.", param="tool_choice")
    # "auto" is read by a --tool-call-parser (jaxserve.http.translate.output_parsing), not here.
    if (
        isinstance(choice, ChatCompletionNamedToolChoiceParam)
        and _tool(request.tools, choice.function.name) is None
    ):
        raise InvalidRequest(
            "The tool specified in `tool_choice` does not match any of the specified `tools`",
            param="tool_choice",
        )


def forced_tool_choice(request: ChatCompletionRequest) -> ForcedToolChoice | None:
    """The forced choice (named or "required"), or None when the model chooses freely or not at all."""
    choice = effective_tool_choice(request)
    if isinstance(choice, ChatCompletionNamedToolChoiceParam):
        return ForcedToolChoice(name=choice.function.name)
    if choice == "required":
        return ForcedToolChoice()
    return None


def forced_tool_schema(request: ChatCompletionRequest) -> dict[str, Any] | None:
    """The JSON schema a forced tool choice constrains the output to, or None."""
    forced = forced_tool_choice(request)
    if forced is None or not request.tools:
        return None
    if forced.name is not None:
        tool = _tool(request.tools, forced.name)
        if tool is None:
            raise InvalidRequest(
                "The tool specified in `tool_choice` does not match any of the specified `tools`",
                param="tool_choice",
            )
        return copy.deepcopy(tool.function.parameters) if tool.function.parameters else dict(EMPTY_PARAMETERS)
    return required_calls_schema(request.tools)


def required_calls_schema(tools: list[ChatCompletionToolsParam]) -> dict[str, Any]:
    """vLLM's schema for tool_choice="required": one or more calls, each naming one of `tools` with
    arguments valid for it. The tools' `$defs` are hoisted to the top (a reference inside a tool's
    parameters resolves against the whole schema); two tools defining one name differently are a 400."""
    calls: list[dict[str, Any]] = []
    defs: dict[str, Any] = {}
    for tool in tools:
        parameters = (
            copy.deepcopy(tool.function.parameters) if tool.function.parameters else dict(EMPTY_PARAMETERS)
        )
        for name, definition in parameters.pop("$defs", {}).items():
            if name in defs and defs[name] != definition:
                raise InvalidRequest(
                    f"Tool definition '{name}' has multiple schemas, which is not supported.", param="tools"
                )
            defs[name] = definition
        calls.append(
            {
                "properties": {
                    "name": {"type": "string", "enum": [tool.function.name]},
                    "parameters": parameters,
                },
                "required": ["name", "parameters"],
            }
        )
    array: dict[str, Any] = {"type": "array", "minItems": 1, "items": {"type": "object", "anyOf": calls}}
    if defs:
        array["$defs"] = defs
    return array


def template_tools(request: ChatCompletionRequest) -> list[dict[str, Any]] | None:
    """The tools as the chat template's `tools` variable sees them (vLLM passes each tool's dump)."""
    if not request.tools:
        return None
    return [tool.model_dump() for tool in request.tools]


def _tool(tools: list[ChatCompletionToolsParam], name: str) -> ChatCompletionToolsParam | None:
    return next((tool for tool in tools if tool.function.name == name), None)
