"""Request fields -> SamplingParams, once the prompt length is known."""

from __future__ import annotations

from typing import Any

from jaxserve.errors import InvalidRequest
from jaxserve.http.protocol.chat_request import ChatCompletionRequest
from jaxserve.http.protocol.completion import CompletionRequest
from jaxserve.sampling.logprobs import TOP_LOGPROBS as MAX_TOP_LOGPROBS
from jaxserve.sampling.params import SamplingParams

DEFAULT_TEMPERATURE = 1.0
DEFAULT_TOP_P = 1.0
"""OpenAI's and vLLM's defaults (vLLM would first consult the model's generation_config.json; this server
does not yet)."""


def check_prompt_fits(prompt_len: int, max_model_len: int) -> None:
    """A prompt must leave room for at least one generated token."""
    if prompt_len == 0:
        raise InvalidRequest("the messages rendered to an empty prompt", param="messages")
    if prompt_len >= max_model_len:
        raise InvalidRequest(
            f"This model's maximum context length is {max_model_len} tokens, but the messages take "
            f"{prompt_len} tokens, which leaves no room for a completion. Please shorten the messages.",
            param="messages",
            code="context_length_exceeded",
        )


def requested_max_tokens(request: ChatCompletionRequest) -> int | None:
    """The completion-length limit the client asked for: max_completion_tokens wins over the deprecated
    max_tokens; None means "until the context window is full"."""
    for name in ("max_completion_tokens", "max_tokens"):
        value = getattr(request, name)
        if value is not None:
            if value < 1:
                raise InvalidRequest(f"'{name}' must be at least 1, got {value}", param=name)
            return int(value)
    return None


def logit_bias_by_id(logit_bias: dict[str, float] | None) -> dict[int, float]:
    """OpenAI sends token ids as JSON object keys (strings)."""
    out: dict[int, float] = {}
    for key, value in (logit_bias or {}).items():
        try:
            out[int(key)] = float(value)
        except ValueError:
            raise InvalidRequest(
                f"logit_bias keys must be token ids, got {key!r}", param="logit_bias"
            ) from None
    return out


def requested_logprobs(request: ChatCompletionRequest) -> int | None:
    """How many top alternatives to return per generated token, or None for no logprobs (vLLM's rules)."""
    top = request.top_logprobs
    if not request.logprobs:
        if top:
            raise InvalidRequest(
                "when using top_logprobs, logprobs must be set to true", param="top_logprobs"
            )
        return None
    if top is not None and not 0 <= top <= MAX_TOP_LOGPROBS:
        raise InvalidRequest(
            f"top_logprobs must be between 0 and {MAX_TOP_LOGPROBS}, got {top}", param="top_logprobs"
        )
    return top or 0


def shared_sampling_fields(request: ChatCompletionRequest | CompletionRequest) -> dict[str, Any]:
    """The SamplingParams fields that chat and legacy completions requests spell the same way."""
    stop = request.stop
    return {
        "presence_penalty": request.presence_penalty or 0.0,
        "frequency_penalty": request.frequency_penalty or 0.0,
        "repetition_penalty": 1.0 if request.repetition_penalty is None else request.repetition_penalty,
        "top_k": 0 if request.top_k is None else request.top_k,
        "min_p": 0.0 if request.min_p is None else request.min_p,
        "min_tokens": request.min_tokens,
        "logit_bias": logit_bias_by_id(request.logit_bias),
        "allowed_token_ids": None if request.allowed_token_ids is None else tuple(request.allowed_token_ids),
        "bad_words": tuple(request.bad_words or ()),
        "temperature": DEFAULT_TEMPERATURE if request.temperature is None else request.temperature,
        "top_p": DEFAULT_TOP_P if request.top_p is None else request.top_p,
        "seed": request.seed,
        "stop": (stop,) if isinstance(stop, str) else tuple(stop or ()),
        "stop_token_ids": tuple(request.stop_token_ids or ()),
        "ignore_eos": request.ignore_eos,
        "include_stop_str_in_output": request.include_stop_str_in_output,
        "skip_special_tokens": request.skip_special_tokens,
        "extra": dict(request.vllm_xargs or {}),
    }


def to_sampling_params(
    request: ChatCompletionRequest, *, prompt_len: int, max_model_len: int
) -> SamplingParams:
    """The sampling and stopping rules for one request whose prompt is `prompt_len` tokens long.

    max_tokens is capped to the context left after the prompt (as current vLLM does) rather than refused,
    so "as long as possible" requests work; the cap ends generation with finish_reason "length".
    """
    check_prompt_fits(prompt_len, max_model_len)
    room = max_model_len - prompt_len
    wanted = requested_max_tokens(request)
    return SamplingParams(
        **shared_sampling_fields(request),
        max_tokens=room if wanted is None else min(wanted, room),
        logprobs=requested_logprobs(request),
        prompt_logprobs=request.prompt_logprobs,
    )
