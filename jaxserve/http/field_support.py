"""Which `ChatCompletionRequest` fields this server honours: ONE table, checked on every request.

A field is SUPPORTED (honoured now, possibly only for some values) or NOT_YET (parsed, but a request that
sets it to anything except a value with no effect gets a 400 naming it). Silently ignoring a field the
client relies on is worse than refusing it. The table is plain data so the README's API-coverage table
can be generated from it, and a test keeps it in step with the spec's property list.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final

from jaxserve.errors import UnsupportedField
from jaxserve.http.protocol.chat_request import ChatCompletionRequest
from jaxserve.http.protocol.options import ResponseFormat

NOT_YET_REASON: Final = "is not supported by this server yet"


class Support(enum.Enum):
    SUPPORTED = "supported"
    NOT_YET = "not yet supported"


@dataclass(frozen=True)
class FieldPolicy:
    """How one request field is treated.

    `accepts`: the values honoured now besides null, or None for "every value the schema allows". For a
    NOT_YET field these are the values that ask for nothing (its default, and equivalents such as an
    empty list); for a partly supported field, the values it is limited to.
    """

    support: Support
    note: str = ""
    accepts: tuple[Any, ...] | None = None
    reason: str = NOT_YET_REASON

    def honours(self, value: Any) -> bool:
        return value is None or self.accepts is None or value in self.accepts


def _supported(
    note: str = "", *, only: tuple[Any, ...] | None = None, reason: str = NOT_YET_REASON
) -> FieldPolicy:
    return FieldPolicy(Support.SUPPORTED, note, only, reason)


def _not_yet(*no_effect: Any, note: str = "") -> FieldPolicy:
    return FieldPolicy(Support.NOT_YET, note, no_effect)


FIELD_SUPPORT: Final[Mapping[str, FieldPolicy]] = MappingProxyType(
    {
        "messages": _supported(
            "text content (strings, text/refusal/thinking parts) for system, developer, user, assistant and "
            "custom roles; tool/function messages, tool calls, media parts and harmony messages are refused"
        ),
        "model": _supported("null or omitted means the first served model name"),
        "frequency_penalty": _supported("[-2, 2], over generated tokens"),
        "logit_bias": _supported(
            "token-id strings -> bias, clamped to [-100, 100]; ids outside the vocabulary are a 400"
        ),
        "logprobs": _supported("raw-model logprob, bytes and top alternatives per generated token"),
        "top_logprobs": _supported("0-20; needs logprobs=true"),
        "max_tokens": _supported("deprecated alias; max_completion_tokens takes precedence"),
        "max_completion_tokens": _supported("capped to the context left after the prompt"),
        "n": _supported("only 1", only=(1,), reason="other than 1 is not supported by this server yet"),
        "presence_penalty": _supported("[-2, 2], over generated tokens"),
        "response_format": _not_yet(ResponseFormat(type="text"), note="{'type': 'text'} asks for nothing"),
        "seed": _supported(),
        "stop": _supported("a string or a list of strings"),
        "stream": _supported(
            "only false", only=(False,), reason="set to true (streaming) is not supported by this server yet"
        ),
        "stream_options": _not_yet(),
        "temperature": _supported("default 1.0; 0 is greedy"),
        "top_p": _supported("default 1.0"),
        "tools": _not_yet([]),
        "tool_choice": _not_yet("none"),
        "reasoning_effort": _not_yet(),
        "include_reasoning": _not_yet(True),
        "parallel_tool_calls": _not_yet(True),
        "user": _supported("accepted, has no effect"),
        "use_beam_search": _not_yet(False),
        "top_k": _supported("0 or -1 = off"),
        "min_p": _supported("[0, 1]"),
        "repetition_penalty": _supported("> 0, over prompt and generated tokens"),
        "length_penalty": _not_yet(1.0),
        "stop_token_ids": _supported(),
        "include_stop_str_in_output": _supported(),
        "ignore_eos": _supported(),
        "min_tokens": _supported("EOS and stop_token_ids are suppressed until reached"),
        "skip_special_tokens": _supported(),
        "spaces_between_special_tokens": _not_yet(True),
        "truncate_prompt_tokens": _not_yet(),
        "prompt_logprobs": _supported(
            "0-20: per prompt token its logprob, rank and top alternatives; the first is null"
        ),
        "allowed_token_ids": _supported("non-empty; ids outside the vocabulary are a 400"),
        "bad_words": _supported(
            "banned with and without a leading space; multi-token words at their last token"
        ),
        "echo": _not_yet(False),
        "add_generation_prompt": _supported(),
        "continue_final_message": _supported("cannot be combined with add_generation_prompt=true"),
        "add_special_tokens": _supported(),
        "documents": _supported("passed to the chat template"),
        "chat_template": _supported("a Jinja template used instead of the model's"),
        "chat_template_kwargs": _supported("extra template variables, e.g. enable_thinking"),
        "mm_processor_kwargs": _not_yet({}),
        "structured_outputs": _not_yet(),
        "priority": _not_yet(0),
        "request_id": _supported("the response id is chatcmpl-<X-Request-Id header or request_id>"),
        "logits_processors": _not_yet([]),
        "return_tokens_as_token_ids": _supported("logprob tokens rendered as token_id:N"),
        "return_token_ids": _not_yet(False),
        "cache_salt": _not_yet(),
        "kv_transfer_params": _not_yet({}),
        "vllm_xargs": _not_yet({}),
    }
)
"""Every `ChatCompletionRequest` property, in the spec's order."""


def check_field_support(request: ChatCompletionRequest) -> None:
    """Raise UnsupportedField for the first field (in spec order) set to a value not honoured yet."""
    for name, policy in FIELD_SUPPORT.items():
        if not policy.honours(getattr(request, name)):
            raise UnsupportedField(name, policy.reason)
