"""Size limits on a request's lists and maps, checked right after parsing, before any tokenising,
template rendering, grammar compiling or device work.

vLLM sets none of these; a server on the open network needs them so that one request cannot buy
unbounded host CPU (stop-string scans and bias tables run per token, templates per message). Each
limit is far above what a legitimate client sends (OpenAI's own API allows 4 stop strings and 128
tools). The body-size cap (413), `n` (128), `top_logprobs`/`prompt_logprobs` (20), the prompt against
the context and the waiting-queue cap (503 with Retry-After) are checked where those values are
interpreted; grammar size and nesting limits live in `jaxserve.sampling.grammar`. docs/security.md
lists them all.
"""

from __future__ import annotations

from collections.abc import Sized
from dataclasses import dataclass

from jaxserve.errors import InvalidRequest
from jaxserve.http.protocol.chat_request import ChatCompletionRequest
from jaxserve.http.protocol.completion import CompletionRequest


@dataclass(frozen=True)
class RequestLimits:
    """The most entries each list or map field of a generation request may hold."""

    messages: int = 4096
    tools: int = 128
    stop: int = 64
    stop_string_chars: int = 1024  # stop strings are matched against the decoded tail after every token
    stop_token_ids: int = 1024
    logit_bias: int = 1024
    bad_words: int = 1024
    allowed_token_ids: int = 262_144  # the largest vocabularies served (Gemma 3): any real subset fits
    prompts: int = 128  # legacy completions' list of prompts; times n, at most this many engine requests


REQUEST_LIMITS = RequestLimits()


def check_chat_limits(request: ChatCompletionRequest, limits: RequestLimits = REQUEST_LIMITS) -> None:
    """Refuse a chat request whose lists are longer than `limits` allow (400 naming the field)."""
    _at_most("messages", request.messages, limits.messages)
    _at_most("tools", request.tools, limits.tools)
    _check_shared(request, limits)


def check_completion_limits(request: CompletionRequest, limits: RequestLimits = REQUEST_LIMITS) -> None:
    """Refuse a legacy completions request whose lists are longer than `limits` allow."""
    prompt = request.prompt
    if isinstance(prompt, list) and prompt and isinstance(prompt[0], str | list):
        _at_most("prompt", prompt, limits.prompts)
        n = request.n or 1
        if len(prompt) * n > limits.prompts:
            raise InvalidRequest(
                f"{len(prompt)} prompts with n={n} would start {len(prompt) * n} generations; at most "
                f"{limits.prompts} per request",
                param="prompt",
            )
    _check_shared(request, limits)


def _check_shared(request: ChatCompletionRequest | CompletionRequest, limits: RequestLimits) -> None:
    stop = [request.stop] if isinstance(request.stop, str) else (request.stop or [])
    _at_most("stop", stop, limits.stop)
    for text in stop:
        if len(text) > limits.stop_string_chars:
            raise InvalidRequest(
                f"each stop string may be at most {limits.stop_string_chars} characters, got one of "
                f"{len(text)}",
                param="stop",
            )
    _at_most("stop_token_ids", request.stop_token_ids, limits.stop_token_ids)
    _at_most("logit_bias", request.logit_bias, limits.logit_bias)
    _at_most("bad_words", request.bad_words, limits.bad_words)
    _at_most("allowed_token_ids", request.allowed_token_ids, limits.allowed_token_ids)


def _at_most(name: str, value: Sized | None, limit: int) -> None:
    if value is not None and len(value) > limit:
        raise InvalidRequest(f"'{name}' may have at most {limit} entries, got {len(value)}", param=name)
