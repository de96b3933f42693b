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

NOT_YET_REASON: Final = "is not supported by this server yet"


class Support(enum.Enum):
    SUPPORTED = "supported"
    NOT_YET = "not yet supported"
    REFUSED = "refused"  # meaningless for this server's setup (e.g. needs multimodal input); always a 400


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


def supported(
    note: str = "", *, only: tuple[Any, ...] | None = None, reason: str = NOT_YET_REASON
) -> FieldPolicy:
    return FieldPolicy(Support.SUPPORTED, note, only, reason)


def not_yet(*no_effect: Any, note: str = "") -> FieldPolicy:
    return FieldPolicy(Support.NOT_YET, note, no_effect)


def refused(*no_effect: Any, reason: str) -> FieldPolicy:
    return FieldPolicy(Support.REFUSED, reason, no_effect, reason)


FIELD_SUPPORT: Final[Mapping[str, FieldPolicy]] = MappingProxyType(
    {
        "messages": supported(
            "text content (strings, text/refusal/thinking parts) for system, developer, user, assistant and "
            "custom roles; tool/function messages, tool calls, media parts and harmony messages are refused"
        ),
        "model": supported("null or omitted means the first served model name"),
        "frequency_penalty": supported("[-2, 2], over generated tokens"),
        "logit_bias": supported(
            "token-id strings -> bias, clamped to [-100, 100]; ids outside the vocabulary are a 400"
        ),
        "logprobs": supported("raw-model logprob, bytes and top alternatives per generated token"),
        "top_logprobs": supported("0-20; needs logprobs=true"),
        "max_tokens": supported("deprecated alias; max_completion_tokens takes precedence"),
        "max_completion_tokens": supported("capped to the context left after the prompt"),
        "n": supported(
            "1-128 choices, each its own engine request (they share the prompt's prefix-cache pages); "
            "with a seed, choice i is seeded seed + i (vLLM); with use_beam_search, the beam width (1-10)"
        ),
        "presence_penalty": supported("[-2, 2], over generated tokens"),
        "response_format": supported(
            "text; json_object; json_schema (strict or not, the schema is enforced by constrained decoding "
            "with llguidance); structural_tag in both forms (format trees of const_string, json_schema, regex, "
            "grammar, any_text, sequence, or, tag, triggered_tags, tags_with_separator; or the legacy "
            "structures/triggers); an invalid schema is a 400 carrying the compiler's message"
        ),
        "seed": supported("reproducible whatever else shares the batch; choice i of n uses seed + i"),
        "stop": supported("a string or a list of strings"),
        "stream": supported("server-sent chat.completion.chunk events ending with data: [DONE]"),
        "stream_options": supported(
            "include_usage (a final usage chunk), continuous_usage_stats (usage on every chunk); "
            "only with stream=true"
        ),
        "temperature": supported("default 1.0; 0 is greedy"),
        "top_p": supported("default 1.0"),
        "tools": supported(
            "function tools, rendered into the prompt through the chat template's tools variable; an empty "
            "list is a 400 (as in vLLM)"
        ),
        "tool_choice": supported(
            '"none": no parsing, the tools are still rendered unless the server runs with '
            '--exclude-tools-when-tool-choice-none; "auto" (the default when tools are given): tool calls '
            "are parsed out of the output by --tool-call-parser (hermes, llama3_json, mistral) and need "
            "--enable-auto-tool-choice, else a 400 (as vLLM); a named function or required: the output is "
            "constrained to the function's arguments, or "
            "to a JSON array of {name, parameters} calls of the given tools, and returned as "
            "message.tool_calls (streamed as tool-call deltas)"
        ),
        "reasoning_effort": supported("passed to the chat template as the variable reasoning_effort (vLLM)"),
        "include_reasoning": supported(
            "false drops message.reasoning (and reasoning deltas); matters with --reasoning-parser"
        ),
        "parallel_tool_calls": supported(
            "false: only the first parsed tool call is returned or streamed (vLLM); null means true"
        ),
        "user": supported("accepted, has no effect"),
        "use_beam_search": supported(
            "vLLM's beam search: n beams, one engine step per token over each beam's top 2n tokens, "
            "answers ranked by cumulative logprob / (prompt + generated tokens) ** length_penalty; "
            "max_tokens, min_tokens, stop, stop_token_ids, ignore_eos and include_stop_str_in_output are "
            "honoured; temperature and seed change nothing (the search is deterministic); top_p, top_k, "
            "min_p, penalties, logit_bias, allowed_token_ids and bad_words are a 400; with stream=true the "
            "beams are sent whole once the search ends"
        ),
        "top_k": supported("0 or -1 = off"),
        "min_p": supported("[0, 1]"),
        "repetition_penalty": supported("> 0, over prompt and generated tokens"),
        "length_penalty": supported("beam search only: any value but 1.0 without use_beam_search is a 400"),
        "stop_token_ids": supported(),
        "include_stop_str_in_output": supported(),
        "ignore_eos": supported(),
        "min_tokens": supported("EOS and stop_token_ids are suppressed until reached"),
        "skip_special_tokens": supported(),
        "spaces_between_special_tokens": supported(
            "accepted; fast (Rust) tokenizers, like vLLM's fast detokenizer, insert no extra spaces"
        ),
        "truncate_prompt_tokens": supported("keep the last k prompt tokens; -1 = the context window"),
        "prompt_logprobs": supported(
            "0-20: per prompt token its logprob, rank and top alternatives; the first is null"
        ),
        "allowed_token_ids": supported("non-empty; ids outside the vocabulary are a 400"),
        "bad_words": supported(
            "banned with and without a leading space; multi-token words at their last token"
        ),
        "echo": supported("prepends the last message's content when its role is the response's role"),
        "add_generation_prompt": supported(),
        "continue_final_message": supported("cannot be combined with add_generation_prompt=true"),
        "add_special_tokens": supported(),
        "documents": supported("passed to the chat template"),
        "chat_template": supported("a Jinja template used instead of the model's"),
        "chat_template_kwargs": supported("extra template variables, e.g. enable_thinking"),
        "mm_processor_kwargs": refused(
            {}, reason="applies to multimodal input, which this text-only model does not accept"
        ),
        "structured_outputs": supported(
            "one of json, regex, choice, grammar (Lark or GBNF), json_object, structural_tag (llguidance); "
            "disable_any_whitespace, disable_additional_properties and whitespace_pattern apply to JSON; "
            "two constraints, or one with response_format or a forced tool_choice, are a 400"
        ),
        "priority": supported(
            "lower runs first when the server runs with --scheduling-policy priority; under the default "
            "fcfs policy a non-zero priority is a 400 (as in vLLM)"
        ),
        "request_id": supported("the response id is chatcmpl-<X-Request-Id header or request_id>"),
        "logits_processors": refused(
            [], reason="names server-side Python logits processors, which this server does not load"
        ),
        "return_tokens_as_token_ids": supported("logprob tokens rendered as token_id:N"),
        "return_token_ids": supported("choice token_ids and prompt_token_ids in the response"),
        "cache_salt": supported(
            "non-empty; prefix-cache pages are shared only between requests with the same salt"
        ),
        "kv_transfer_params": refused(
            {}, reason="needs a disaggregated prefill/decode deployment, which this server is not"
        ),
        "vllm_xargs": supported(
            "accepted and passed to the engine with the request (no plugin reads them yet)"
        ),
    }
)
"""Every `ChatCompletionRequest` property, in the spec's order."""


def check_field_support(request: ChatCompletionRequest) -> None:
    """Raise UnsupportedField for the first field (in spec order) set to a value not honoured yet."""
    for name, policy in FIELD_SUPPORT.items():
        if not policy.honours(getattr(request, name)):
            raise UnsupportedField(name, policy.reason)
