"""Request messages -> the plain dicts chat templates render, following vLLM's rules.

Text parts are joined with "\\n" into one string (the "string" content format every text-only template
handles); refusal and thinking parts count as text, as in vLLM. Anything this text-only, tool-less server
cannot put into a prompt faithfully is refused with the path of the offending element, never dropped.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel

from jaxserve.errors import InvalidRequest, UnsupportedField
from jaxserve.http.protocol.content import (
    ChatCompletionContentPartRefusalParam,
    ChatCompletionContentPartTextParam,
    CustomThinkCompletionContentParam,
    NonTextContentPart,
    UnknownContentPart,
)
from jaxserve.http.protocol.messages import (
    ChatCompletionAssistantMessageParam,
    ChatCompletionMessageParam,
    ChatCompletionToolMessageParam,
    CustomChatCompletionMessageParam,
    HarmonyMessage,
)

TOOLS_LATER = "is not supported by this server yet (tool declarations come with tool calling)"


def to_template_messages(messages: Sequence[ChatCompletionMessageParam]) -> list[dict[str, Any]]:
    """The conversation as `{"role", "content", ["name"], ["reasoning"...]}` dicts for the template."""
    return [_template_message(message, f"messages.{index}") for index, message in enumerate(messages)]


def _template_message(message: ChatCompletionMessageParam, path: str) -> dict[str, Any]:
    if isinstance(message, HarmonyMessage):
        raise UnsupportedField(path, "is a harmony-format message, which is not supported by this server yet")
    _refuse_unsupported(message, path)
    result: dict[str, Any] = {
        "role": message.role,
        "content": message_text(message.content, f"{path}.content"),
    }
    if isinstance(message, ChatCompletionToolMessageParam):
        # A tool result from an earlier turn: templates match it to its call by id (vLLM passes it on).
        result["tool_call_id"] = message.tool_call_id
        return result
    if message.name is not None:
        result["name"] = message.name
    if isinstance(message, CustomChatCompletionMessageParam) and message.tool_call_id is not None:
        result["tool_call_id"] = message.tool_call_id
    if (
        isinstance(message, ChatCompletionAssistantMessageParam | CustomChatCompletionMessageParam)
        and message.tool_calls
    ):
        # Earlier turns' calls, rendered by the template; the tokenizer parses their JSON arguments.
        result["tool_calls"] = [call.model_dump(exclude_none=True) for call in message.tool_calls]
    if isinstance(message, ChatCompletionAssistantMessageParam):
        reasoning = _assistant_reasoning(message, path)
        if reasoning is not None:
            # vLLM sets both spellings: templates for interleaved thinking read one or the other.
            result["reasoning"] = reasoning
            result["reasoning_content"] = reasoning
    return result


def _refuse_unsupported(message: BaseModel, path: str) -> None:
    """What a message may carry that this server cannot put into a prompt faithfully yet."""
    if isinstance(message, ChatCompletionAssistantMessageParam):
        if message.audio is not None:
            raise UnsupportedField(f"{path}.audio")
        if message.function_call is not None:
            raise UnsupportedField(f"{path}.function_call", TOOLS_LATER)
    if isinstance(message, CustomChatCompletionMessageParam):
        if message.tools:
            raise UnsupportedField(f"{path}.tools", TOOLS_LATER)
    elif (message.model_extra or {}).get("tools"):
        raise UnsupportedField(f"{path}.tools", TOOLS_LATER)


def _assistant_reasoning(message: ChatCompletionAssistantMessageParam, path: str) -> str | None:
    """An earlier turn's reasoning, sent back by clients of reasoning models (`reasoning`, formerly
    `reasoning_content`; neither is in the spec's assistant schema, both are extra keys)."""
    extra = message.model_extra or {}
    for key in ("reasoning", "reasoning_content"):
        value = extra.get(key)
        if value is None:
            continue
        if not isinstance(value, str):
            raise InvalidRequest(f"'{path}.{key}' must be a string", param=f"{path}.{key}")
        return value
    return None


def message_text(content: str | Sequence[Any] | None, path: str) -> str:
    """A message's content as one string; null content is the empty string, as in vLLM."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "\n".join(_part_text(part, f"{path}.{index}") for index, part in enumerate(content))


def _part_text(part: Any, path: str) -> str:
    if isinstance(part, str):
        return part
    if isinstance(part, ChatCompletionContentPartTextParam):
        return part.text
    if isinstance(part, ChatCompletionContentPartRefusalParam):
        return part.refusal
    if isinstance(part, CustomThinkCompletionContentParam):
        return part.thinking
    if isinstance(part, NonTextContentPart):
        raise InvalidRequest(f"this model does not accept {part.input_name} input", param=path)
    if isinstance(part, UnknownContentPart):
        raise InvalidRequest(f"unknown content part type '{part.type}'", param=f"{path}.type")
    raise TypeError(f"unexpected content part {type(part).__name__}")  # the schema admits no other kind
