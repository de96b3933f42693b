"""Chat message params, mirroring the spec's message schemas (one per role, custom roles, harmony).

Which schema a message is validated against is decided by its `role` (or, for a harmony message, by its
`author`), not by trying each in turn: with a custom-role schema that accepts any role, trial-and-error
would accept anything and report errors from the wrong schema.

Optional properties that the spec gives no default are modelled as `X | None = None`: absent and null
mean the same, as in vLLM, which tolerates null from clients that serialise every key.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Discriminator, Tag

from jaxserve.http.protocol.base import ExtensibleModel, ProtocolModel
from jaxserve.http.protocol.content import MessageContent
from jaxserve.http.protocol.tools import (
    ChatCompletionFunctionToolParam,
    ChatCompletionMessageFunctionToolCallParam,
    FunctionCallInput,
    ToolCallParam,
)


class ChatCompletionDeveloperMessageParam(ExtensibleModel):
    content: MessageContent
    role: Literal["developer"]
    name: str | None = None


class ChatCompletionSystemMessageParam(ExtensibleModel):
    content: MessageContent
    role: Literal["system"]
    name: str | None = None


class ChatCompletionUserMessageParam(ExtensibleModel):
    content: MessageContent
    role: Literal["user"]
    name: str | None = None


class Audio(ExtensibleModel):
    """A reference to an earlier audio response of the model."""

    id: str


class ChatCompletionAssistantMessageParam(ExtensibleModel):
    role: Literal["assistant"]
    audio: Audio | None = None
    content: MessageContent | None = None
    function_call: FunctionCallInput | None = None
    name: str | None = None
    refusal: str | None = None
    tool_calls: list[ToolCallParam] | None = None


class ChatCompletionToolMessageParam(ExtensibleModel):
    content: MessageContent
    role: Literal["tool"]
    tool_call_id: str


class ChatCompletionFunctionMessageParam(ExtensibleModel):
    content: str | None
    name: str
    role: Literal["function"]


class CustomChatCompletionMessageParam(ExtensibleModel):
    """A message with a role outside the OpenAI set (e.g. Llama 3's `ipython`), passed to the template."""

    role: str
    content: MessageContent | None = None
    name: str | None = None
    tool_call_id: str | None = None
    tool_calls: list[ChatCompletionMessageFunctionToolCallParam] | None = None
    reasoning: str | None = None
    tools: list[ChatCompletionFunctionToolParam] | None = None


Role = Literal["user", "assistant", "system", "developer", "tool"]
"""The role of a harmony message's author."""


class Author(ProtocolModel):
    role: Role
    name: str | None = None


class HarmonyMessage(ProtocolModel):
    """The spec's `Message`: the openai-harmony message format used by gpt-oss models."""

    author: Author
    content: list[dict[str, Any]] | None = None
    channel: str | None = None
    recipient: str | None = None
    content_type: str | None = None


STANDARD_ROLES = ("developer", "system", "user", "assistant", "tool", "function")
"""Roles with a schema of their own; any other role string is a custom role."""


def _message_tag(value: Any) -> str | None:
    if isinstance(value, BaseModel):
        value = {"role": getattr(value, "role", None), "author": getattr(value, "author", None)}
    if not isinstance(value, dict):
        return None
    role = value.get("role")
    if isinstance(role, str):
        return f"role:{role}" if role in STANDARD_ROLES else "role:custom"
    if role is None and "author" in value:
        return "author:harmony"
    return None


ChatCompletionMessageParam = Annotated[
    Annotated[ChatCompletionDeveloperMessageParam, Tag("role:developer")]
    | Annotated[ChatCompletionSystemMessageParam, Tag("role:system")]
    | Annotated[ChatCompletionUserMessageParam, Tag("role:user")]
    | Annotated[ChatCompletionAssistantMessageParam, Tag("role:assistant")]
    | Annotated[ChatCompletionToolMessageParam, Tag("role:tool")]
    | Annotated[ChatCompletionFunctionMessageParam, Tag("role:function")]
    | Annotated[CustomChatCompletionMessageParam, Tag("role:custom")]
    | Annotated[HarmonyMessage, Tag("author:harmony")],
    Discriminator(
        _message_tag,
        custom_error_type="invalid_message",
        custom_error_message="a message must be an object with a string 'role'",
    ),
]
"""One entry of the request's `messages`."""
