"""A validated chat request -> what the engine needs, in two steps.

`chat_prompt` makes every decision that needs no model (field support, messages, template options), so
a request that will be refused costs no tokenisation and never touches the engine; `engine_input` then
renders the prompt with the model's tokenizer and derives the sampling rules from its length.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from jaxserve.http.field_support import check_field_support
from jaxserve.http.protocol.chat_request import ChatCompletionRequest
from jaxserve.http.translate.messages import to_template_messages
from jaxserve.http.translate.sampling import to_sampling_params
from jaxserve.http.translate.template import ChatTemplateArgs, chat_template_args, render_prompt
from jaxserve.sampling.params import SamplingParams

if TYPE_CHECKING:
    from jaxserve.modeling.tokenizer import Tokenizer


@dataclass(frozen=True)
class ChatPrompt:
    """The conversation as template input, plus the template options: a prompt not yet rendered."""

    messages: list[dict[str, Any]]
    template_args: ChatTemplateArgs


@dataclass(frozen=True)
class EngineInput:
    prompt_token_ids: list[int]
    sampling_params: SamplingParams


def chat_prompt(request: ChatCompletionRequest) -> ChatPrompt:
    """Refuse what this server does not honour yet, and collect what the chat template needs."""
    check_field_support(request)
    return ChatPrompt(
        messages=to_template_messages(request.messages), template_args=chat_template_args(request)
    )


def engine_input(
    request: ChatCompletionRequest, prompt: ChatPrompt, tokenizer: Tokenizer, max_model_len: int
) -> EngineInput:
    """Render the prompt ids and derive SamplingParams (which need the prompt's length)."""
    prompt_token_ids = render_prompt(tokenizer, prompt.messages, prompt.template_args)
    params = to_sampling_params(request, prompt_len=len(prompt_token_ids), max_model_len=max_model_len)
    return EngineInput(prompt_token_ids=prompt_token_ids, sampling_params=params)
