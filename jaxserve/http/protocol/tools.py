"""Tool schemas: tool definitions and choice on the request, tool calls inside assistant messages.

Parsed now, honoured later: the translation step rejects them until tool calling lands, but a request
using them must still validate against the spec so the rejection names the right field.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Discriminator, Tag

from jaxserve.http.protocol.base import ExtensibleModel


class FunctionDefinition(ExtensibleModel):
    """A function offered to the model in the request's `tools`."""

    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None


class ChatCompletionToolsParam(ExtensibleModel):
    type: Literal["function"] = "function"
    function: FunctionDefinition


class ChatCompletionNamedFunction(ExtensibleModel):
    name: str


class ChatCompletionNamedToolChoiceParam(ExtensibleModel):
    function: ChatCompletionNamedFunction
    type: Literal["function"] = "function"


class OpenAIFunctionDefinition(ExtensibleModel):
    """The spec's `openai__types__shared_params__function_definition__FunctionDefinition`."""

    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ChatCompletionFunctionToolParam(ExtensibleModel):
    """A tool carried by a custom-role message (vLLM: tools declared on a developer message)."""

    function: OpenAIFunctionDefinition
    type: Literal["function"]


class FunctionCallInput(ExtensibleModel):
    """The spec's `FunctionCall-Input`: the deprecated `function_call` of an assistant message."""

    arguments: str
    name: str


class Function(ExtensibleModel):
    arguments: str
    name: str


class ChatCompletionMessageFunctionToolCallParam(ExtensibleModel):
    id: str
    function: Function
    type: Literal["function"]


class Custom(ExtensibleModel):
    input: str
    name: str


class ChatCompletionMessageCustomToolCallParam(ExtensibleModel):
    id: str
    custom: Custom
    type: Literal["custom"]


def _tool_call_tag(value: Any) -> str | None:
    if isinstance(value, BaseModel):
        value = {"type": getattr(value, "type", None)}
    if isinstance(value, dict) and value.get("type") in ("function", "custom"):
        return f"tool_call:{value['type']}"
    return None


ToolCallParam = Annotated[
    Annotated[ChatCompletionMessageFunctionToolCallParam, Tag("tool_call:function")]
    | Annotated[ChatCompletionMessageCustomToolCallParam, Tag("tool_call:custom")],
    Discriminator(
        _tool_call_tag,
        custom_error_type="invalid_tool_call",
        custom_error_message="a tool call must have type 'function' or 'custom'",
    ),
]
"""One entry of an assistant message's `tool_calls`."""
