"""Engine outputs -> a `text_completion` response body, with logprobs in the legacy completions layout.

Follows vLLM's `request_output_to_completion_response`: `echo` prepends the prompt text, and with
`logprobs` the prompt's tokens and logprobs too (the first prompt token has none: null entries); `echo`
with max_tokens 0 returns the prompt alone; usage counts every token the engine processed. With `n > 1`
each prompt has n consecutive choices.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from jaxserve.engine.outputs import RequestOutput, TokenLogprob
from jaxserve.http.protocol.chat_response import PromptTokenUsageInfo, UsageInfo
from jaxserve.http.protocol.completion import (
    CompletionLogProbs,
    CompletionRequest,
    CompletionResponse,
    CompletionResponseChoice,
)
from jaxserve.http.translate.completion import CompletionInput
from jaxserve.http.translate.logprobs import TokenRenderer, prompt_logprobs
from jaxserve.http.translate.response import request_usage

LOGPROB_FLOOR = -9999.0
"""-inf is not JSON; OpenAI (and vLLM) report impossible tokens as -9999.0."""


def completion_logprobs(
    token_ids: Sequence[int],
    entries: Sequence[TokenLogprob | None],
    token_text: Callable[[int], str],
    *,
    initial_text_offset: int = 0,
) -> CompletionLogProbs:
    """The legacy layout: per token its text, logprob, a {text: logprob} dict of it and its top
    alternatives, and its character offset in the choice text (the running sum of token-text lengths).

    `entries[i]` is the engine's logprob record of `token_ids[i]`, or None where there is none. A token
    whose text equals an alternative's keeps its own logprob (the dict is keyed by text).
    """
    if len(token_ids) != len(entries):
        raise ValueError(f"{len(token_ids)} tokens but {len(entries)} logprob entries")
    out = CompletionLogProbs()
    offset = initial_text_offset
    for token_id, entry in zip(token_ids, entries, strict=True):
        text = token_text(token_id)
        out.tokens.append(text)
        out.text_offset.append(offset)
        offset += len(text)
        if entry is None:
            out.token_logprobs.append(None)
            out.top_logprobs.append(None)
            continue
        out.token_logprobs.append(max(entry.logprob, LOGPROB_FLOOR))
        top = {text: max(entry.logprob, LOGPROB_FLOOR)}
        for alt_id, alt_logprob in entry.top:
            top.setdefault(token_text(alt_id), max(alt_logprob, LOGPROB_FLOOR))
        out.top_logprobs.append(top)
    return out


def completion_choice(
    index: int,
    output: RequestOutput,
    prompt: CompletionInput,
    request: CompletionRequest,
    render: TokenRenderer,
) -> CompletionResponseChoice:
    """One choice for one prompt's final output."""
    prompt_ids = prompt.prompt_token_ids
    token_ids: Sequence[int] = output.token_ids
    entries: Sequence[TokenLogprob | None] | None = output.logprobs
    text = output.text
    if request.echo:
        # vLLM's quirk, kept for compatibility: with return_token_ids the prompt is returned as ids only.
        prompt_text = "" if request.return_token_ids else (prompt.prompt_text or "")
        prompt_entries = output.prompt_logprobs
        if request.max_tokens == 0:  # scoring: the prompt alone, the one generated token dropped
            token_ids, entries, text = prompt_ids, prompt_entries, prompt_text
        else:
            token_ids = [*prompt_ids, *output.token_ids]
            if entries is not None and prompt_entries is not None:
                entries = [*prompt_entries, *entries]
            text = prompt_text + output.text
    logprobs = None
    if request.logprobs is not None:
        if entries is None:
            raise ValueError("the request asked for logprobs but the engine returned none")
        logprobs = completion_logprobs(token_ids, entries, render.text)
    return CompletionResponseChoice(
        index=index,
        text=text,
        logprobs=logprobs,
        finish_reason=output.finish_reason,
        stop_reason=output.stop_reason,
        token_ids=list(output.token_ids) if request.return_token_ids else None,
        prompt_logprobs=(
            None if output.prompt_logprobs is None else prompt_logprobs(output.prompt_logprobs, render)
        ),
        prompt_token_ids=list(prompt_ids) if request.return_token_ids else None,
    )


def to_completion_response(
    outputs: Sequence[Sequence[RequestOutput]],
    prompts: Sequence[CompletionInput],
    request: CompletionRequest,
    *,
    response_id: str,
    model: str,
    created: int,
    render: TokenRenderer,
) -> CompletionResponse:
    """The choices of every prompt (`outputs[p]` holds prompt p's n choices), prompt after prompt, indexed
    0.. in that order (vLLM's); usage counts each prompt once and every choice's generated tokens, and
    the cached prompt tokens of each prompt's first choice (see `response.request_usage`)."""
    choices: list[CompletionResponseChoice] = []
    usages: list[UsageInfo] = []
    for per_prompt, prompt in zip(outputs, prompts, strict=True):
        for output in per_prompt:
            choices.append(completion_choice(len(choices), output, prompt, request, render))
        usages.append(request_usage(len(prompt.prompt_token_ids), per_prompt))
    prompt_tokens = sum(u.prompt_tokens for u in usages)
    completion_tokens = sum(u.completion_tokens or 0 for u in usages)
    cached_tokens = sum(
        u.prompt_tokens_details.cached_tokens or 0 for u in usages if u.prompt_tokens_details is not None
    )
    usage = UsageInfo(
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        total_tokens=prompt_tokens + completion_tokens,
        prompt_tokens_details=PromptTokenUsageInfo(cached_tokens=cached_tokens),
    )
    return CompletionResponse(id=response_id, created=created, model=model, choices=choices, usage=usage)
