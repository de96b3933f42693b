"""The spec's ChatCompletionRequest property names: a checked-in copy, and a reader for the spec file."""

from __future__ import annotations

import re
from pathlib import Path

SPEC_FILE = Path(__file__).resolve().parents[3] / "shared" / "spec" / "chat-completions-openapi.txt"
"""shared/ sits beside the repository checkout, on developer machines and in CI alike."""

SPEC_PROPERTIES = (
    "messages", "model", "frequency_penalty", "logit_bias", "logprobs", "top_logprobs", "max_tokens",
    "max_completion_tokens", "n", "presence_penalty", "response_format", "seed", "stop", "stream",
    "stream_options", "temperature", "top_p", "tools", "tool_choice", "reasoning_effort", "include_reasoning",
    "parallel_tool_calls", "user", "use_beam_search", "top_k", "min_p", "repetition_penalty", "length_penalty",
    "stop_token_ids", "include_stop_str_in_output", "ignore_eos", "min_tokens", "skip_special_tokens",
    "spaces_between_special_tokens", "truncate_prompt_tokens", "prompt_logprobs", "allowed_token_ids",
    "bad_words", "echo", "add_generation_prompt", "continue_final_message", "add_special_tokens", "documents",
    "chat_template", "chat_template_kwargs", "mm_processor_kwargs", "structured_outputs", "priority",
    "request_id", "logits_processors", "return_tokens_as_token_ids", "return_token_ids", "cache_salt",
    "kv_transfer_params", "vllm_xargs",
)  # fmt: skip

_SCHEMA_KEYWORDS = frozenset({"properties", "items", "anyOf", "additionalProperties", "enum", "required"})
_BARE_KEY = re.compile(r"'?([A-Za-z_][A-Za-z0-9_]*)'?:")


def read_request_properties(spec_text: str) -> list[str]:
    """Property names of ChatCompletionRequest in the flattened (indentation-free) YAML of the spec.

    Within the schema's block, a property name is a line holding only `name:`; the only other such
    lines are JSON-schema keywords that open a nested block.
    """
    lines = spec_text.splitlines()
    start = lines.index("ChatCompletionRequest:")
    end = lines.index("title: ChatCompletionRequest", start)
    names = []
    for line in lines[start + 1 : end]:
        match = _BARE_KEY.fullmatch(line.strip())
        if match and match.group(1) not in _SCHEMA_KEYWORDS:
            names.append(match.group(1))
    return names
