"""The chat-template arguments a request asks for, and the call that renders the prompt ids."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from jaxserve.errors import InvalidRequest, UnsupportedField
from jaxserve.http.protocol.chat_request import ChatCompletionRequest
from jaxserve.http.translate.forced_tools import template_tools

if TYPE_CHECKING:
    from jaxserve.modeling.tokenizer import Tokenizer


@dataclass(frozen=True)
class ChatTemplateArgs:
    """Everything besides the messages that shapes the rendered prompt."""

    add_generation_prompt: bool = True
    continue_final_message: bool = False
    add_special_tokens: bool = False
    chat_template: str | None = None
    documents: list[dict[str, str]] | None = None
    template_kwargs: dict[str, Any] | None = None
    tools: list[dict[str, Any]] | None = None  # the request's tools, for the template's `tools` variable


def chat_template_args(request: ChatCompletionRequest) -> ChatTemplateArgs:
    """Validate and collect the request's template options (vLLM's request-level rules)."""
    if request.continue_final_message and request.add_generation_prompt:
        # Both default to what a new assistant turn needs, so continuing the final message means also
        # setting add_generation_prompt=false: vLLM refuses the combination rather than pick one.
        raise InvalidRequest(
            "continue_final_message and add_generation_prompt cannot both be true; set "
            "add_generation_prompt to false to continue the final message",
            param="continue_final_message",
        )
    kwargs = request.chat_template_kwargs
    if kwargs and kwargs.get("tools"):
        # Template variables may override `tools`, which would render tools this server cannot parse.
        raise UnsupportedField("chat_template_kwargs.tools")
    return ChatTemplateArgs(
        add_generation_prompt=request.add_generation_prompt,
        continue_final_message=request.continue_final_message,
        add_special_tokens=request.add_special_tokens,
        chat_template=request.chat_template,
        documents=request.documents,
        template_kwargs=template_variables(request),
        tools=template_tools(request),
    )


def template_variables(request: ChatCompletionRequest) -> dict[str, Any] | None:
    """`chat_template_kwargs`, plus `reasoning_effort` as vLLM passes it (the request's kwargs win)."""
    variables = dict(request.chat_template_kwargs or {})
    if request.reasoning_effort is not None:
        variables = {"reasoning_effort": request.reasoning_effort, **variables}
    return variables or None


def render_prompt(tokenizer: Tokenizer, messages: list[dict[str, Any]], args: ChatTemplateArgs) -> list[int]:
    """Prompt token ids for the conversation (the tokenizer raises InvalidRequest for template failures)."""
    return tokenizer.apply_chat_template(
        messages,
        add_generation_prompt=args.add_generation_prompt,
        continue_final_message=args.continue_final_message,
        chat_template=args.chat_template,
        tools=args.tools,
        documents=list(args.documents) if args.documents is not None else None,
        template_kwargs=args.template_kwargs,
        add_special_tokens=args.add_special_tokens,
    )
