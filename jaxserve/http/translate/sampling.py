"""Request fields -> SamplingParams, once the prompt length is known."""

from __future__ import annotations

from jaxserve.errors import InvalidRequest
from jaxserve.http.protocol.chat_request import ChatCompletionRequest
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
    stop = request.stop
    return SamplingParams(
        max_tokens=room if wanted is None else min(wanted, room),
        temperature=DEFAULT_TEMPERATURE if request.temperature is None else request.temperature,
        top_p=DEFAULT_TOP_P if request.top_p is None else request.top_p,
        seed=request.seed,
        stop=(stop,) if isinstance(stop, str) else tuple(stop or ()),
        stop_token_ids=tuple(request.stop_token_ids or ()),
        ignore_eos=request.ignore_eos,
        include_stop_str_in_output=request.include_stop_str_in_output,
        skip_special_tokens=request.skip_special_tokens,
    )
