"""`POST /v1/completions` request and response bodies: OpenAI's legacy completions API plus vLLM's extensions.

The field list, types and defaults mirror vLLM's `CompletionRequest`, so a client written for vLLM parses
here unchanged; which fields this server honours is decided by `jaxserve.http.completion_support`.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any, Literal

from pydantic import Discriminator, Field, StrictInt, Tag, model_validator

from jaxserve.http.protocol.base import ProtocolModel
from jaxserve.http.protocol.chat_response import Logprob, UsageInfo
from jaxserve.http.protocol.options import (
    AnyResponseFormat,
    LogitsProcessorConstructor,
    StreamOptions,
    StructuredOutputsParams,
)

logger = logging.getLogger(__name__)

_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1


def _prompt_form(value: Any) -> str | None:
    """Which of the four prompt forms a value means, judged by its first element, so a malformed prompt
    gets the errors of that form only (e.g. `[1, true]`: "prompt.1 should be an integer")."""
    if isinstance(value, str):
        return "prompt:text"
    if not isinstance(value, list):
        return None
    first = value[0] if value else None
    if isinstance(first, str):
        return "prompt:texts"
    if isinstance(first, list):
        return "prompt:id_lists"
    return "prompt:ids"


PromptInput = Annotated[
    Annotated[str, Tag("prompt:text")]
    | Annotated[list[str], Tag("prompt:texts")]
    | Annotated[list[StrictInt], Tag("prompt:ids")]
    | Annotated[list[list[StrictInt]], Tag("prompt:id_lists")],
    Discriminator(
        _prompt_form,
        custom_error_type="invalid_prompt",
        custom_error_message="prompt must be a string, a list of strings, a list of token ids or a list of lists",
    ),
]
"""One text, a batch of texts, one tokenised prompt, or a batch of them. Token ids must be JSON integers
(StrictInt: `true` or `1.5` in a token list is a mistake, not an id). Tags contain a colon so error paths
drop them (see `http.errors.param_path`)."""

XargValue = str | int | float | list[str | int | float]


class CompletionRequest(ProtocolModel):
    """A completions request body, in vLLM's field order (OpenAI's fields first)."""

    model: str | None = None
    prompt: PromptInput | None = None
    best_of: int | None = None  # OpenAI's field; vLLM's V1 engine dropped it, it is kept to refuse clearly
    echo: bool | None = False
    frequency_penalty: float | None = 0.0
    logit_bias: dict[str, float] | None = None
    logprobs: int | None = None
    max_tokens: int | None = 16  # OpenAI's and vLLM's default for completions (unlike chat: no limit)
    n: int = 1
    presence_penalty: float | None = 0.0
    seed: Annotated[int, Field(ge=_INT64_MIN, le=_INT64_MAX)] | None = None
    stop: str | list[str] | None = Field(default_factory=list)
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    suffix: str | None = None
    temperature: float | None = None
    top_p: float | None = None
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
    allowed_token_ids: list[int] | None = None
    bad_words: list[str] | None = None
    prompt_logprobs: int | None = None

    # vLLM's request extensions.
    prompt_embeds: bytes | list[bytes] | None = None
    add_special_tokens: bool = True  # unlike chat: a raw prompt gets BOS if the tokenizer adds one
    response_format: AnyResponseFormat | None = None
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
        """Unknown keys are ignored (as in vLLM) but logged, so a field that did nothing can be found."""
        if isinstance(data, dict):
            unknown = sorted(str(key) for key in data if key not in cls.model_fields)
            if unknown:
                logger.debug("ignoring unknown completion request fields: %s", ", ".join(unknown))
        return data


class CompletionLogProbs(ProtocolModel):
    """The legacy per-token logprob layout: four parallel lists, one entry per token of `text`.

    `top_logprobs` maps token text to logprob: the token itself plus up to `logprobs` alternatives.
    Entries are null where no logprob exists (the first prompt token under `echo`).
    """

    text_offset: list[int] = Field(default_factory=list)
    token_logprobs: list[float | None] = Field(default_factory=list)
    tokens: list[str] = Field(default_factory=list)
    top_logprobs: list[dict[str, float] | None] = Field(default_factory=list)


class CompletionResponseChoice(ProtocolModel):
    index: int
    text: str
    logprobs: CompletionLogProbs | None = None
    finish_reason: str | None = None
    stop_reason: int | str | None = None
    token_ids: list[int] | None = None
    prompt_logprobs: list[dict[str, Logprob] | None] | None = None
    prompt_token_ids: list[int] | None = None


class CompletionResponse(ProtocolModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionResponseChoice]
    service_tier: Literal["auto", "default", "flex", "scale", "priority"] | None = None
    system_fingerprint: str | None = None
    usage: UsageInfo
    kv_transfer_params: dict[str, Any] | None = None
