"""What a chat request asks of a stream: whether to stream, and where usage goes (vLLM's rules)."""

from __future__ import annotations

from dataclasses import dataclass

from jaxserve.errors import InvalidRequest
from jaxserve.http.protocol.chat_request import ChatCompletionRequest


@dataclass(frozen=True)
class StreamSettings:
    """`include_usage`: one last chunk with `choices: []` and the usage; `continuous_usage`: usage (so
    far) on every chunk as well. vLLM grants continuous usage only together with include_usage."""

    include_usage: bool = False
    continuous_usage: bool = False


def stream_settings(request: ChatCompletionRequest) -> StreamSettings | None:
    """None for a non-streaming request; refuses the fields that only make sense with `stream=true`."""
    options = request.stream_options
    # vLLM tests the raw value's truthiness, so an empty `{}` passes without stream=true; an empty
    # object parses to all defaults with nothing set, which is how it is recognised here.
    if not request.stream:
        if options is not None and (options.model_fields_set or options.model_extra):
            raise InvalidRequest(
                "Stream options can only be defined when `stream=True`.", param="stream_options"
            )
        return None
    if request.prompt_logprobs is not None:
        # vLLM refuses values > 0 and silently drops 0 (chat chunks have no place for prompt logprobs);
        # refusing every value keeps a request from asking for something it will not get.
        raise InvalidRequest(
            "`prompt_logprobs` are not available when `stream=True`.", param="prompt_logprobs"
        )
    if options is None:
        return StreamSettings()
    include_usage = bool(options.include_usage)  # StreamOptions defaults it to true, as vLLM does
    return StreamSettings(
        include_usage=include_usage, continuous_usage=include_usage and bool(options.continuous_usage_stats)
    )
