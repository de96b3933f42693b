"""The engine's final RequestOutputs (one per choice) -> a `chat.completion` response body."""

from __future__ import annotations

from collections.abc import Sequence

from jaxserve.engine.outputs import RequestOutput
from jaxserve.http.protocol.chat_response import (
    ChatCompletionResponse,
    ChatCompletionResponseChoice,
    ChatMessage,
    FunctionCallOutput,
    PromptTokenUsageInfo,
    ToolCall,
    UsageInfo,
)
from jaxserve.http.translate.chat import ResponseShape
from jaxserve.http.translate.forced_tool_calls import tool_call_message
from jaxserve.http.translate.logprobs import TokenRenderer, chat_logprobs, prompt_logprobs
from jaxserve.http.translate.output_parsing import OutputParsing


def request_usage(prompt_tokens: int, outputs: Sequence[RequestOutput]) -> UsageInfo:
    """Exact token counts of a request whose choices all share one prompt: the prompt counted once, the
    completion tokens of every choice, and the prompt tokens the prefix cache served.

    `prompt_tokens_details` is always reported (OpenAI does; vLLM only with
    --enable-prompt-tokens-details). Its `cached_tokens` is the first choice's: the other choices of the
    same request find the prompt cached because of it, which says nothing about the request's own hits.
    """
    completion_tokens = sum(len(output.token_ids) for output in outputs)
    return UsageInfo(
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        total_tokens=prompt_tokens + completion_tokens,
        prompt_tokens_details=PromptTokenUsageInfo(
            cached_tokens=outputs[0].num_cached_tokens if outputs else 0
        ),
    )


def to_chat_completion_response(
    outputs: Sequence[RequestOutput],
    *,
    response_id: str,
    model: str,
    created: int,
    prompt_tokens: int,
    render: TokenRenderer | None = None,
    shape: ResponseShape | None = None,
    parsing: OutputParsing | None = None,
) -> ChatCompletionResponse:
    """One choice per output (choice i is `outputs[i]`), each holding its whole completion.

    `render` turns token ids into logprob entries; it is needed only when the outputs carry logprobs.
    The prompt's logprobs and ids are the same for every choice; they are taken from the first.
    `parsing` reads reasoning and tool calls out of each choice's text.
    """
    if not outputs:
        raise ValueError("a response needs at least one output")
    if render is None and any(o.logprobs is not None or o.prompt_logprobs is not None for o in outputs):
        raise ValueError("an output with logprobs needs a TokenRenderer")
    shape = shape or ResponseShape(role="assistant", echo_prefix="", return_token_ids=False)
    choices = []
    for index, output in enumerate(outputs):
        message = chat_message(output.text, shape, parsing)
        finish_reason = "tool_calls" if message.tool_calls else output.finish_reason
        if shape.forced_tools is not None:  # a named or required tool_choice: the whole text is the calls
            message, finish_reason = tool_call_message(
                shape.role, output.text, output.finish_reason, shape.forced_tools
            )
        choices.append(
            ChatCompletionResponseChoice(
                index=index,
                message=message,
                token_ids=list(output.token_ids) if shape.return_token_ids else None,
                logprobs=None
                if output.logprobs is None or render is None
                else chat_logprobs(output.logprobs, render),
                # vLLM: parsed tool calls make the finish reason "tool_calls", whatever stopped the output
                # (a forced named call keeps the engine's: OpenAI reports those as "stop").
                finish_reason=finish_reason,
                stop_reason=output.stop_reason,
            )
        )
    first = outputs[0]
    return ChatCompletionResponse(
        id=response_id,
        created=created,
        model=model,
        choices=choices,
        usage=request_usage(prompt_tokens, outputs),
        prompt_token_ids=list(first.prompt_token_ids) if shape.return_token_ids else None,
        prompt_logprobs=(
            None
            if first.prompt_logprobs is None or render is None
            else prompt_logprobs(first.prompt_logprobs, render)
        ),
    )


def chat_message(text: str, shape: ResponseShape, parsing: OutputParsing | None) -> ChatMessage:
    """One choice's message: its text, or the parts `parsing` reads out of it."""
    if parsing is None:
        return ChatMessage(role=shape.role, content=shape.echo_prefix + text)
    parsed = parsing.parse(text)
    content = parsed.content
    if shape.echo_prefix:
        content = shape.echo_prefix + (content or "")
    return ChatMessage(
        role=shape.role,
        content=content,
        reasoning=parsed.reasoning,
        reasoning_content=parsed.reasoning,  # vLLM's older name for the same text
        tool_calls=[
            ToolCall(id=call.id, function=FunctionCallOutput(name=call.name, arguments=call.arguments))
            for call in parsed.tool_calls
        ],
    )
