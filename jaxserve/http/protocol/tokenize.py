"""`POST /tokenize` and `POST /detokenize` bodies, shaped as vLLM's (not part of the OpenAI API).

`/tokenize` takes either a raw `prompt` or a chat (`messages` plus the chat-template options of
`/v1/chat/completions`); the two forms are told apart by the presence of `messages`, so a malformed body
gets the errors of the form it meant rather than of both.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Discriminator, RootModel, Tag

from jaxserve.http.protocol.base import ProtocolModel
from jaxserve.http.protocol.messages import ChatCompletionMessageParam
from jaxserve.http.protocol.tools import ChatCompletionToolsParam


class TokenizeCompletionRequest(ProtocolModel):
    model: str | None = None
    prompt: str
    add_special_tokens: bool = True  # as for /v1/completions: BOS if the tokenizer adds one
    return_token_strs: bool | None = False


class TokenizeChatRequest(ProtocolModel):
    """The chat form: rendered exactly as `/v1/chat/completions` renders the same fields."""

    model: str | None = None
    messages: list[ChatCompletionMessageParam]
    add_generation_prompt: bool = True
    return_token_strs: bool | None = False
    continue_final_message: bool = False
    add_special_tokens: bool = False  # as for chat: the template writes BOS itself
    chat_template: str | None = None
    chat_template_kwargs: dict[str, Any] | None = None
    mm_processor_kwargs: dict[str, Any] | None = None
    tools: list[ChatCompletionToolsParam] | None = None


def _tokenize_form(value: Any) -> str | None:
    if isinstance(value, TokenizeChatRequest):
        return "tokenize:chat"
    if isinstance(value, TokenizeCompletionRequest):
        return "tokenize:prompt"
    if not isinstance(value, dict):
        return None
    return "tokenize:chat" if "messages" in value else "tokenize:prompt"


class TokenizeRequest(
    RootModel[
        Annotated[
            Annotated[TokenizeCompletionRequest, Tag("tokenize:prompt")]
            | Annotated[TokenizeChatRequest, Tag("tokenize:chat")],
            Discriminator(
                _tokenize_form,
                custom_error_type="invalid_tokenize_request",
                custom_error_message="the request must be a JSON object with 'prompt' or 'messages'",
            ),
        ]
    ]
):
    """A raw `prompt`, or a chat (`messages` and the chat-template options), told apart by `messages`."""

    # The discriminator tags contain a colon so error paths drop them (see `http.errors.param_path`).


class TokenizeResponse(ProtocolModel):
    count: int
    max_model_len: int
    tokens: list[int]
    token_strs: list[str] | None = None


class DetokenizeRequest(ProtocolModel):
    model: str | None = None
    tokens: list[int]


class DetokenizeResponse(ProtocolModel):
    prompt: str
