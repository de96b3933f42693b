"""Request-side rules of `tool_choice` "auto" and "none" against the server's flags (vLLM's)."""

from __future__ import annotations

from jaxserve.errors import InvalidRequest
from jaxserve.http.parser_settings import ParserSettings
from jaxserve.http.protocol.chat_request import ChatCompletionRequest
from jaxserve.http.translate.forced_tools import effective_tool_choice

AUTO_NEEDS_FLAGS = '"auto" tool choice requires --enable-auto-tool-choice and --tool-call-parser to be set'


def tool_choice_is_auto(request: ChatCompletionRequest) -> bool:
    """Whether the model may call tools freely ("auto", vLLM's default when tools come without a choice)."""
    return effective_tool_choice(request) == "auto"


def check_tool_choice(request: ChatCompletionRequest, settings: ParserSettings) -> None:
    """Refuse "auto" (explicit or by default) unless the server parses tool calls, as vLLM does."""
    if tool_choice_is_auto(request) and not settings.auto_tool_choice:
        raise InvalidRequest(AUTO_NEEDS_FLAGS, param="tool_choice")


def without_excluded_tools(request: ChatCompletionRequest, settings: ParserSettings) -> ChatCompletionRequest:
    """With --exclude-tools-when-tool-choice-none, a `tool_choice: "none"` request's tools are not
    rendered into the prompt (vLLM); otherwise the request as it is."""
    excluded = settings.exclude_tools_when_tool_choice_none and effective_tool_choice(request) == "none"
    if excluded and request.tools:
        return request.model_copy(update={"tools": None})
    return request
