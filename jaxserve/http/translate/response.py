"""The engine's final RequestOutput -> a `chat.completion` response body."""

from __future__ import annotations

from jaxserve.engine.outputs import RequestOutput
from jaxserve.http.protocol.chat_response import (
    ChatCompletionResponse,
    ChatCompletionResponseChoice,
    ChatMessage,
    UsageInfo,
)


def to_chat_completion_response(
    output: RequestOutput, *, response_id: str, model: str, created: int, prompt_tokens: int
) -> ChatCompletionResponse:
    """One choice holding the whole completion; usage counts are exact token counts."""
    completion_tokens = len(output.token_ids)
    choice = ChatCompletionResponseChoice(
        index=0,
        message=ChatMessage(role="assistant", content=output.text),
        logprobs=None,
        finish_reason=output.finish_reason,
        stop_reason=output.stop_reason,
    )
    usage = UsageInfo(
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        total_tokens=prompt_tokens + completion_tokens,
    )
    return ChatCompletionResponse(id=response_id, created=created, model=model, choices=[choice], usage=usage)
