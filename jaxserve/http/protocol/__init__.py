"""Pydantic models mirroring the chat-completions spec (/work/shared/spec), one module per concern:
`content` (message content parts), `messages`, `tools`, `options` (response format, stream options,
structured outputs), `chat_request`, `chat_response`, `model_list` (`GET /v1/models`)."""

from jaxserve.http.protocol.chat_request import ChatCompletionRequest
from jaxserve.http.protocol.chat_response import (
    ChatCompletionResponse,
    ChatCompletionResponseChoice,
    ChatMessage,
    UsageInfo,
)
from jaxserve.http.protocol.messages import ChatCompletionMessageParam
from jaxserve.http.protocol.model_list import ModelCard, ModelList

__all__ = [
    "ChatCompletionMessageParam",
    "ChatCompletionRequest",
    "ChatCompletionResponse",
    "ChatCompletionResponseChoice",
    "ChatMessage",
    "ModelCard",
    "ModelList",
    "UsageInfo",
]
