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
from jaxserve.http.protocol.options import ResponseFormat

COMPLETION_FIELD_SUPPORT: Final[Mapping[str, FieldPolicy]] = MappingProxyType(
    {
        "model": supported("null or omitted means the first served model name"),
        "prompt": supported("a string, a list of strings, a list of token ids or a list of such lists"),
        "best_of": supported("only 1", only=(1,), reason="other than 1 is not supported by this server"),
        "echo": supported("prepends the prompt text (and, with logprobs, the prompt's logprobs)"),
        "frequency_penalty": supported("[-2, 2], over generated tokens"),
        "logit_bias": supported("token-id strings -> bias, clamped to [-100, 100]"),
        "logprobs": supported("0-5: the chosen token and that many alternatives, legacy layout"),
        "max_tokens": supported("default 16; capped to the context left after the prompt"),
        "n": supported("only 1", only=(1,), reason="other than 1 is not supported by this server yet"),
        "presence_penalty": supported("[-2, 2], over generated tokens"),
        "seed": supported(),
        "stop": supported("a string or a list of strings"),
        "stream": supported(
            "only false", only=(False,), reason="set to true (streaming) is not supported by this server yet"
        ),
        "stream_options": not_yet(),
        # Fill-in-the-middle needs a model-specific prompt format; vLLM refuses it with the same words.
        "suffix": FieldPolicy(Support.NOT_YET, "refused, as by vLLM", (), "is not currently supported"),
        "temperature": supported("default 1.0; 0 is greedy"),
        "top_p": supported("default 1.0"),
        "user": supported("accepted, has no effect"),
        "use_beam_search": not_yet(False),
        "top_k": supported("0 or -1 = off"),
        "min_p": supported("[0, 1]"),
        "repetition_penalty": supported("> 0, over prompt and generated tokens"),
        "length_penalty": not_yet(1.0),
        "stop_token_ids": supported(),
        "include_stop_str_in_output": supported(),
        "ignore_eos": supported(),
        "min_tokens": supported("EOS and stop_token_ids are suppressed until reached"),
        "skip_special_tokens": supported(),
        "spaces_between_special_tokens": not_yet(True),
        "truncate_prompt_tokens": supported("keep the last k prompt tokens; -1 = the context window"),
        "allowed_token_ids": supported("non-empty; ids outside the vocabulary are a 400"),
        "bad_words": supported("banned with and without a leading space"),
        "prompt_logprobs": supported("0-20, vLLM's per-prompt-token layout"),
        "prompt_embeds": not_yet(),
        "add_special_tokens": supported("default true: BOS if the tokenizer adds one"),
        "response_format": not_yet(ResponseFormat(type="text"), note="{'type': 'text'} asks for nothing"),
        "structured_outputs": not_yet(),
        "priority": FIELD_SUPPORT["priority"],
        "request_id": supported("the response id is cmpl-<X-Request-Id header or request_id>"),
        "logits_processors": FIELD_SUPPORT["logits_processors"],
        "return_tokens_as_token_ids": supported("logprob tokens rendered as token_id:N"),
        "return_token_ids": supported("adds prompt_token_ids and token_ids to each choice"),
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
