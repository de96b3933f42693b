"""A validated chat request -> what the engine needs, in two steps.

`chat_prompt` makes every decision that needs no model (field support, messages, template options), so
a request that will be refused costs no tokenisation and never touches the engine; `engine_input` then
renders the prompt with the model's tokenizer and derives the sampling rules from its length.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from jaxserve.errors import InvalidRequest, UnsupportedField
from jaxserve.http.field_support import check_field_support
from jaxserve.http.protocol.chat_request import ChatCompletionRequest
from jaxserve.http.translate.beam import check_beam_search_fields
from jaxserve.http.translate.choices import requested_n
from jaxserve.http.translate.forced_tools import ForcedToolChoice, check_tools, forced_tool_choice
from jaxserve.http.translate.messages import to_template_messages
from jaxserve.http.translate.sampling import to_sampling_params
from jaxserve.http.translate.structured import structured_request
from jaxserve.http.translate.template import ChatTemplateArgs, chat_template_args, render_prompt
from jaxserve.sampling.grammar import GrammarRequest
from jaxserve.sampling.params import SamplingParams

if TYPE_CHECKING:
    from jaxserve.modeling.tokenizer import Tokenizer
    from jaxserve.sampling.structured import GrammarCompiler


@dataclass(frozen=True)
class ChatPrompt:
    """The conversation as template input, plus the template options: a prompt not yet rendered."""

    messages: list[dict[str, Any]]
    template_args: ChatTemplateArgs
    grammar: GrammarRequest | None = None  # the output constraint (structured outputs, forced tools)


@dataclass(frozen=True)
class EngineInput:
    prompt_token_ids: list[int]
    sampling_params: SamplingParams


def chat_prompt(request: ChatCompletionRequest) -> ChatPrompt:
    """Refuse what this server does not honour yet, and collect what the chat template needs."""
    check_field_support(request)
    requested_n(request.n)
    check_beam_search_fields(request)
    check_tools(request)
    return ChatPrompt(
        messages=to_template_messages(request.messages),
        template_args=chat_template_args(request),
        grammar=structured_request(request),
    )


def engine_input(
    request: ChatCompletionRequest,
    prompt: ChatPrompt,
    tokenizer: Tokenizer,
    max_model_len: int,
    grammars: GrammarCompiler | None = None,
) -> EngineInput:
    """Render the prompt ids and derive SamplingParams (which need the prompt's length); compile the
    output constraint, if any, with `grammars` (an invalid grammar is a 400 before anything is queued)."""
    prompt_token_ids = render_prompt(tokenizer, prompt.messages, prompt.template_args)
    prompt_token_ids = truncate_prompt(prompt_token_ids, request.truncate_prompt_tokens, max_model_len)
    params = to_sampling_params(request, prompt_len=len(prompt_token_ids), max_model_len=max_model_len)
    if prompt.grammar is not None:
        if grammars is None:
            raise UnsupportedField(prompt.grammar.param, "needs structured outputs, which this engine lacks")
        params = dataclasses.replace(params, structured=grammars.compile(prompt.grammar))
    return EngineInput(prompt_token_ids=prompt_token_ids, sampling_params=params)


def truncate_prompt(prompt_token_ids: list[int], keep: int | None, max_model_len: int) -> list[int]:
    """vLLM's truncate_prompt_tokens: keep the last `keep` tokens (-1: as many as the context holds)."""
    if keep is None:
        return prompt_token_ids
    if keep == -1:
        keep = max_model_len
    if keep < 1:
        raise InvalidRequest(
            "truncate_prompt_tokens must be -1 or at least 1", param="truncate_prompt_tokens"
        )
    if keep > max_model_len:
        raise InvalidRequest(
            f"truncate_prompt_tokens ({keep}) is greater than the context window ({max_model_len}); "
            "choose a smaller truncation size",
            param="truncate_prompt_tokens",
        )
    return prompt_token_ids[-keep:]


@dataclass(frozen=True)
class ResponseShape:
    """Request options that shape the response rather than the generation."""

    role: str  # the response message's role
    echo_prefix: str  # text put before the generated text (echo)
    return_token_ids: bool
    forced_tools: ForcedToolChoice | None = None  # a named/required tool_choice: output is tool calls


def response_shape(request: ChatCompletionRequest, prompt: ChatPrompt) -> ResponseShape:
    """vLLM: the role is "assistant" with a generation prompt, else the last message's role; `echo`
    prepends the last message's content when that message has the response's role."""
    last = prompt.messages[-1] if prompt.messages else {}
    role = "assistant" if request.add_generation_prompt else str(last.get("role", "assistant"))
    echo_prefix = ""
    if request.echo and last.get("role") == role and isinstance(last.get("content"), str):
        echo_prefix = last["content"]
    return ResponseShape(
        role=role,
        echo_prefix=echo_prefix,
        return_token_ids=bool(request.return_token_ids),
        forced_tools=forced_tool_choice(request),
    )
