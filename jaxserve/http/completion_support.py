"""Which `CompletionRequest` fields this server honours: the completions twin of `field_support`.

Same rules as the chat table (one entry per field, in vLLM's order; a NOT_YET field set to anything but a
no-effect value is a 400 naming it), same `FieldPolicy` objects, so both tables read alike and a client
never has a field silently ignored.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

from jaxserve.errors import UnsupportedField
from jaxserve.http.field_support import FIELD_SUPPORT, FieldPolicy, Support, not_yet, supported
from jaxserve.http.protocol.completion import CompletionRequest

COMPLETION_FIELD_SUPPORT: Final[Mapping[str, FieldPolicy]] = MappingProxyType(
    {
        "model": supported("null or omitted means the first served model name"),
        "prompt": supported("a string, a list of strings, a list of token ids or a list of such lists"),
        "best_of": supported("only 1", only=(1,), reason="other than 1 is not supported by this server"),
        "echo": supported("prepends the prompt text (and, with logprobs, the prompt's logprobs)"),
        "frequency_penalty": FIELD_SUPPORT["frequency_penalty"],
        "logit_bias": FIELD_SUPPORT["logit_bias"],
        "logprobs": supported("0-5: the chosen token and that many alternatives, legacy layout"),
        "max_tokens": supported("default 16; capped to the context left after the prompt"),
        "n": supported(
            "1-128 choices per prompt, numbered prompt by prompt; with a seed, choice i is seeded seed + i; "
            "with use_beam_search, the beam width (1-10)"
        ),
        "presence_penalty": FIELD_SUPPORT["presence_penalty"],
        "seed": FIELD_SUPPORT["seed"],
        "stop": FIELD_SUPPORT["stop"],
        "stream": supported(
            "only false", only=(False,), reason="set to true (streaming) is not supported by this server yet"
        ),
        "stream_options": not_yet(),
        # Fill-in-the-middle needs a model-specific prompt format; vLLM refuses it with the same words.
        "suffix": FieldPolicy(Support.NOT_YET, "refused, as by vLLM", (), "is not currently supported"),
        "temperature": FIELD_SUPPORT["temperature"],
        "top_p": FIELD_SUPPORT["top_p"],
        "user": FIELD_SUPPORT["user"],
        "use_beam_search": FIELD_SUPPORT["use_beam_search"],
        "top_k": FIELD_SUPPORT["top_k"],
        "min_p": FIELD_SUPPORT["min_p"],
        "repetition_penalty": FIELD_SUPPORT["repetition_penalty"],
        "length_penalty": FIELD_SUPPORT["length_penalty"],
        "stop_token_ids": FIELD_SUPPORT["stop_token_ids"],
        "include_stop_str_in_output": FIELD_SUPPORT["include_stop_str_in_output"],
        "ignore_eos": FIELD_SUPPORT["ignore_eos"],
        "min_tokens": FIELD_SUPPORT["min_tokens"],
        "skip_special_tokens": FIELD_SUPPORT["skip_special_tokens"],
        "spaces_between_special_tokens": FIELD_SUPPORT["spaces_between_special_tokens"],
        "truncate_prompt_tokens": FIELD_SUPPORT["truncate_prompt_tokens"],
        "allowed_token_ids": FIELD_SUPPORT["allowed_token_ids"],
        "bad_words": FIELD_SUPPORT["bad_words"],
        "prompt_logprobs": supported("0-20, vLLM's per-prompt-token layout"),
        "prompt_embeds": not_yet(),
        "add_special_tokens": FIELD_SUPPORT["add_special_tokens"],
        "response_format": FIELD_SUPPORT["response_format"],
        "structured_outputs": supported(
            "one of json, regex, choice, grammar (Lark or GBNF), json_object, structural_tag (llguidance); "
            "disable_any_whitespace, disable_additional_properties and whitespace_pattern apply to JSON; "
            "two constraints, or one with response_format, are a 400"
        ),
        "priority": FIELD_SUPPORT["priority"],
        "request_id": supported("the response id is cmpl-<X-Request-Id header or request_id>"),
        "logits_processors": FIELD_SUPPORT["logits_processors"],
        "return_tokens_as_token_ids": FIELD_SUPPORT["return_tokens_as_token_ids"],
        "return_token_ids": FIELD_SUPPORT["return_token_ids"],
        "cache_salt": FIELD_SUPPORT["cache_salt"],
        "kv_transfer_params": FIELD_SUPPORT["kv_transfer_params"],
        "vllm_xargs": FIELD_SUPPORT["vllm_xargs"],
    }
)
"""Every `CompletionRequest` property, in vLLM's order."""


def check_completion_field_support(request: CompletionRequest) -> None:
    """Raise UnsupportedField for the first field (in table order) set to a value not honoured yet."""
    for name, policy in COMPLETION_FIELD_SUPPORT.items():
        if not policy.honours(getattr(request, name)):
            raise UnsupportedField(name, policy.reason)
