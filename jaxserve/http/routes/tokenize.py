"""`POST /tokenize` and `POST /detokenize` (vLLM's extra endpoints; no API key, as in vLLM).

A chat is rendered by the very functions `/v1/chat/completions` uses, so `/tokenize`'s count for a chat
is the `usage.prompt_tokens` the chat endpoint reports for the same messages, and a chat the chat endpoint
refuses is refused here with the same error.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from aiohttp import web

from jaxserve.errors import InvalidRequest
from jaxserve.http.limits import check_chat_limits
from jaxserve.http.protocol.chat_request import ChatCompletionRequest
from jaxserve.http.protocol.tokenize import (
    DetokenizeRequest,
    DetokenizeResponse,
    TokenizeChatRequest,
    TokenizeCompletionRequest,
    TokenizeRequest,
    TokenizeResponse,
)
from jaxserve.http.request_body import parse_body, read_json_object
from jaxserve.http.state import SERVER_STATE
from jaxserve.http.translate.chat import chat_prompt
from jaxserve.http.translate.template import render_prompt

if TYPE_CHECKING:
    from jaxserve.modeling.tokenizer import Tokenizer


def as_chat_request(request: TokenizeChatRequest) -> ChatCompletionRequest:
    """The chat-completions request whose prompt this tokenize request asks for (same field names)."""
    return ChatCompletionRequest(
        messages=request.messages,
        add_generation_prompt=request.add_generation_prompt,
        continue_final_message=request.continue_final_message,
        add_special_tokens=request.add_special_tokens,
        chat_template=request.chat_template,
        chat_template_kwargs=request.chat_template_kwargs,
        mm_processor_kwargs=request.mm_processor_kwargs,
        tools=request.tools,
    )


def tokenize_ids(request: TokenizeCompletionRequest | TokenizeChatRequest, tokenizer: Tokenizer) -> list[int]:
    """The prompt ids the generation endpoints would compute for the same input.

    No context-length check: counting the tokens of a text too long for the model is a use of this
    endpoint, and `max_model_len` in the response lets the client compare.
    """
    if isinstance(request, TokenizeCompletionRequest):
        return tokenizer.encode(request.prompt, add_special_tokens=request.add_special_tokens)
    chat = as_chat_request(request)
    check_chat_limits(chat)
    prompt = chat_prompt(chat)
    return render_prompt(tokenizer, prompt.messages, prompt.template_args)


def check_token_ids(tokens: list[int], vocab_size: int) -> None:
    """Ids to decode must name tokens of the vocabulary."""
    bad = [t for t in tokens if not 0 <= t < vocab_size]
    if bad:
        raise InvalidRequest(
            f"Token id {bad[0]} is out of vocabulary (ids are 0 to {vocab_size - 1})", param="tokens"
        )


async def tokenize(request: web.Request) -> web.StreamResponse:
    state = request.app[SERVER_STATE]
    body = parse_body(TokenizeRequest, await read_json_object(request)).root
    state.resolve_model(body.model)
    tokenizer = state.engine.tokenizer
    # Off the event loop, as in the chat route: a long prompt or a request's own template (rendered in the
    # sandbox, up to its deadline) must not stall the streams of other requests.
    ids = await asyncio.to_thread(tokenize_ids, body, tokenizer)
    token_strs = [str(s) for s in tokenizer.hf.convert_ids_to_tokens(ids)] if body.return_token_strs else None
    response = TokenizeResponse(
        count=len(ids), max_model_len=state.engine.max_model_len, tokens=ids, token_strs=token_strs
    )
    return web.json_response(response.model_dump(mode="json"))


async def detokenize(request: web.Request) -> web.StreamResponse:
    """The ids decoded as vLLM does: special tokens kept (it is the inverse of /tokenize, which adds them)."""
    state = request.app[SERVER_STATE]
    body = parse_body(DetokenizeRequest, await read_json_object(request))
    state.resolve_model(body.model)
    tokenizer = state.engine.tokenizer
    check_token_ids(body.tokens, tokenizer.vocab_size)
    text = tokenizer.decode(body.tokens, skip_special_tokens=False)
    return web.json_response(DetokenizeResponse(prompt=text).model_dump(mode="json"))
