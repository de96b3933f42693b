"""The engine's final RequestOutput -> a `chat.completion` response body."""

from __future__ import annotations

from jaxserve.engine.outputs import RequestOutput
from jaxserve.http.protocol.chat_response import (
    ChatCompletionResponse,
    ChatCompletionResponseChoice,
    ChatMessage,
    UsageInfo,
)
from jaxserve.http.translate.chat import ResponseShape
from jaxserve.http.translate.logprobs import TokenRenderer, chat_logprobs, prompt_logprobs


def to_chat_completion_response(
    output: RequestOutput,
    *,
    response_id: str,
    model: str,
    created: int,
    prompt_tokens: int,
    render: TokenRenderer | None = None,
    shape: ResponseShape | None = None,
) -> ChatCompletionResponse:
    """One choice holding the whole completion; usage counts are exact token counts.

    `render` turns token ids into logprob entries; it is needed only when the output carries logprobs.
    """
    if render is None and (output.logprobs is not None or output.prompt_logprobs is not None):
        raise ValueError("an output with logprobs needs a TokenRenderer")
    shape = shape or ResponseShape(role="assistant", echo_prefix="", return_token_ids=False)
    completion_tokens = len(output.token_ids)
    choice = ChatCompletionResponseChoice(
        index=0,
        message=ChatMessage(role=shape.role, content=shape.echo_prefix + output.text),
        token_ids=list(output.token_ids) if shape.return_token_ids else None,
        logprobs=None
        if output.logprobs is None or render is None
        else chat_logprobs(output.logprobs, render),
        finish_reason=output.finish_reason,
        stop_reason=output.stop_reason,
    )
    usage = UsageInfo(
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        total_tokens=prompt_tokens + completion_tokens,
    )
    return ChatCompletionResponse(
        id=response_id,
        created=created,
        model=model,
        choices=[choice],
        usage=usage,
        prompt_token_ids=list(output.prompt_token_ids) if shape.return_token_ids else None,
        prompt_logprobs=(
            None
            if output.prompt_logprobs is None or render is None
            else prompt_logprobs(output.prompt_logprobs, render)
        ),
    )
