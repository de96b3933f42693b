"""What the engine hands back to the HTTP layer for each request."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TokenLogprob:
    """The raw-model log-probability of one token at one position, its rank, and the top alternatives.

    `top` holds (token_id, logprob) pairs, most likely first, as many as the request asked for.
    """

    token_id: int
    logprob: float
    rank: int  # 1 = the most likely token at this position
    top: tuple[tuple[int, float], ...] = ()


@dataclass(frozen=True)
class RequestOutput:
    """A snapshot of one request's progress, emitted after each step that produced text for it.

    `text` and `token_ids` are cumulative for the whole completion so far; `delta_text` and
    `delta_token_ids` are what this snapshot adds. The last snapshot has `finished=True` and a
    `finish_reason` of "stop" (EOS, stop token or stop string) or "length" (max_tokens or context end);
    `stop_reason` is the matched stop string or stop token id, None for EOS or length (vLLM semantics).
    `logprobs` (cumulative, one per generated token) is set when the request asked for logprobs;
    `prompt_logprobs` (one per prompt token, the first None) when it asked for prompt logprobs.
    """

    request_id: str
    prompt_token_ids: tuple[int, ...]
    text: str
    token_ids: tuple[int, ...]
    delta_text: str
    delta_token_ids: tuple[int, ...]
    finished: bool
    finish_reason: str | None = None
    stop_reason: int | str | None = None
    logprobs: tuple[TokenLogprob, ...] | None = None
    prompt_logprobs: tuple[TokenLogprob | None, ...] | None = None
    # Prompt tokens whose keys/values came from the prefix cache instead of being computed.
    num_cached_tokens: int = 0
    # Set when the engine failed this request (a fault in its step); the HTTP layer answers 500.
    error: str | None = None
