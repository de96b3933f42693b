"""`ChatCompletionRequest`: every property of the spec's schema, with the spec's types and defaults.

Parsing accepts everything the spec allows; whether this server honours a field is decided separately by
`jaxserve.http.field_support`, so the schema stays a faithful mirror while support grows.
Properties the spec leaves without a default are `X | None = None` (absent and null mean the same).
"""

from __future__ import annotations

import logging
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from jaxserve.http.protocol.base import ProtocolModel
from jaxserve.http.protocol.messages import ChatCompletionMessageParam
from jaxserve.http.protocol.options import (
    AnyResponseFormat,
    LogitsProcessorConstructor,
    StreamOptions,
    StructuredOutputsParams,
)
from jaxserve.http.protocol.tools import ChatCompletionNamedToolChoiceParam, ChatCompletionToolsParam

logger = logging.getLogger(__name__)

_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1
"""The spec bounds `seed` to a signed 64-bit integer (its JSON spells the bounds as rounded floats)."""

XargValue = str | int | float | list[str | int | float]


class ChatCompletionRequest(ProtocolModel):
    """A chat-completions request body (OpenAI fields plus vLLM's extensions), in the spec's order."""

    messages: list[ChatCompletionMessageParam]
    model: str | None = None
    frequency_penalty: float | None = 0.0
    logit_bias: dict[str, float] | None = None
    logprobs: bool | None = False
    top_logprobs: int | None = 0
    max_tokens: int | None = None  # deprecated by the spec in favour of max_completion_tokens
    max_completion_tokens: int | None = None
    n: int | None = 1
    presence_penalty: float | None = 0.0
    response_format: AnyResponseFormat | None = None
    seed: Annotated[int, Field(ge=_INT64_MIN, le=_INT64_MAX)] | None = None
    stop: str | list[str] | None = Field(default_factory=list)
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    temperature: float | None = None
    top_p: float | None = None
    tools: list[ChatCompletionToolsParam] | None = None
    tool_choice: Literal["none", "auto", "required"] | ChatCompletionNamedToolChoiceParam | None = "none"
    reasoning_effort: Literal["low", "medium", "high"] | None = None
    include_reasoning: bool = True
    parallel_tool_calls: bool | None = True
    user: str | None = None

    # vLLM's sampling extensions.
    use_beam_search: bool = False
    top_k: int | None = None
    min_p: float | None = None
    repetition_penalty: float | None = None
    length_penalty: float = 1.0
    stop_token_ids: list[int] | None = Field(default_factory=list)
    include_stop_str_in_output: bool = False
    ignore_eos: bool = False
    min_tokens: int = 0
    skip_special_tokens: bool = True
    spaces_between_special_tokens: bool = True
    truncate_prompt_tokens: Annotated[int, Field(ge=-1)] | None = None
    prompt_logprobs: int | None = None
    allowed_token_ids: list[int] | None = None
    bad_words: list[str] | None = None

    # vLLM's chat-template and request extensions.
    echo: bool = False
    add_generation_prompt: bool = True
    continue_final_message: bool = False
    add_special_tokens: bool = False
    documents: list[dict[str, str]] | None = None
    chat_template: str | None = None
    chat_template_kwargs: dict[str, Any] | None = None
    mm_processor_kwargs: dict[str, Any] | None = None
    structured_outputs: StructuredOutputsParams | None = None
    priority: int = 0
    request_id: str | None = None
    logits_processors: list[str | LogitsProcessorConstructor] | None = None
    return_tokens_as_token_ids: bool | None = None
    return_token_ids: bool | None = None
    cache_salt: Annotated[str, Field(min_length=1)] | None = None  # vLLM refuses an empty salt
    kv_transfer_params: dict[str, Any] | None = None
    vllm_xargs: dict[str, XargValue] | None = None

    @model_validator(mode="before")
    @classmethod
    def _log_unknown_fields(cls, data: Any) -> Any:
        """Unknown top-level keys are ignored (clients written for other servers send their own
        extensions), but logged so a field that silently did nothing can be found."""
        if isinstance(data, dict):
            unknown = sorted(str(key) for key in data if key not in cls.model_fields)
            if unknown:
                logger.debug("ignoring unknown chat-completion request fields: %s", ", ".join(unknown))
        return data
