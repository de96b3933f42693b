"""`ChatCompletionResponse` and the objects inside it, mirroring the spec's schemas.

Every property is serialised, null or empty included, as vLLM does, so clients see one stable shape.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from jaxserve.http.protocol.base import ProtocolModel


class FunctionCallOutput(ProtocolModel):
    """The spec's `FunctionCall-Output`."""

    name: str
    arguments: str


class ToolCall(ProtocolModel):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCallOutput


class AnnotationURLCitation(ProtocolModel):
    end_index: int
    start_index: int
    title: str
    url: str


class Annotation(ProtocolModel):
    type: Literal["url_citation"]
    url_citation: AnnotationURLCitation


class ChatCompletionAudio(ProtocolModel):
    id: str
    data: str
    expires_at: int
    transcript: str


class ChatMessage(ProtocolModel):
    role: str
    content: str | None = None
    refusal: str | None = None
    annotations: Annotation | None = None
    audio: ChatCompletionAudio | None = None
    function_call: FunctionCallOutput | None = None
    tool_calls: list[ToolCall] = Field(default_factory=list)
    reasoning: str | None = None
    reasoning_content: str | None = None


class ChatCompletionLogProb(ProtocolModel):
    token: str
    logprob: float = -9999.0
    bytes: list[int] | None = None


class ChatCompletionLogProbsContent(ProtocolModel):
    token: str
    logprob: float = -9999.0
    bytes: list[int] | None = None
    top_logprobs: list[ChatCompletionLogProb] = Field(default_factory=list)


class ChatCompletionLogProbs(ProtocolModel):
    content: list[ChatCompletionLogProbsContent] | None = None


class ChatCompletionResponseChoice(ProtocolModel):
    index: int
    message: ChatMessage
    logprobs: ChatCompletionLogProbs | None = None
    finish_reason: str | None = "stop"
    stop_reason: int | str | None = None
    token_ids: list[int] | None = None


class PromptTokenUsageInfo(ProtocolModel):
    cached_tokens: int | None = None


class UsageInfo(ProtocolModel):
    prompt_tokens: int = 0
    total_tokens: int = 0
    completion_tokens: int | None = 0
    prompt_tokens_details: PromptTokenUsageInfo | None = None


class Logprob(ProtocolModel):
    logprob: float
    rank: int | None = None
    decoded_token: str | None = None


class ChatCompletionResponse(ProtocolModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatCompletionResponseChoice]
    service_tier: Literal["auto", "default", "flex", "scale", "priority"] | None = None
    system_fingerprint: str | None = None
    usage: UsageInfo
    prompt_logprobs: list[dict[str, Logprob] | None] | None = None
    prompt_token_ids: list[int] | None = None
    kv_transfer_params: dict[str, Any] | None = None
