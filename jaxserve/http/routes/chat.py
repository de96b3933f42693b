"""`POST /v1/chat/completions` (non-streaming for now)."""

from __future__ import annotations

import logging
import secrets
import time
import uuid

from aiohttp import web

from jaxserve.http.generation import ClientDisconnected, final_output
from jaxserve.http.protocol.chat_request import ChatCompletionRequest
from jaxserve.http.request_body import parse_body, read_json_object
from jaxserve.http.state import SERVER_STATE
from jaxserve.http.translate.chat import chat_prompt, engine_input
from jaxserve.http.translate.logprobs import TokenRenderer
from jaxserve.http.translate.response import to_chat_completion_response

logger = logging.getLogger(__name__)

REQUEST_ID_HEADER = "X-Request-Id"

CLIENT_CLOSED_STATUS = 499
"""nginx's "client closed request": never seen by the departed client, but clear in access logs."""


def base_request_id(request: web.Request, body_request_id: str | None) -> str:
    """vLLM's precedence: the X-Request-Id header, then the body's request_id, then a random id."""
    return request.headers.get(REQUEST_ID_HEADER) or body_request_id or uuid.uuid4().hex


def _client_connected(request: web.Request) -> bool:
    transport = request.transport
    return transport is not None and not transport.is_closing()


async def create_chat_completion(request: web.Request) -> web.StreamResponse:
    """Validate, translate, run to completion on the engine, answer with one `chat.completion`."""
    created = int(time.time())
    state = request.app[SERVER_STATE]
    chat = parse_body(ChatCompletionRequest, await read_json_object(request))
    model = state.resolve_model(chat.model)
    prompt = chat_prompt(chat)  # every refusal that needs no model happens here, before the engine
    engine = state.engine
    inputs = engine_input(chat, prompt, engine.tokenizer, engine.max_model_len)

    base_id = base_request_id(request, chat.request_id)
    response_id = f"chatcmpl-{base_id}"
    # Client-chosen ids need not be unique; the engine's must be, so add a random suffix.
    engine_request_id = f"{response_id}-{secrets.token_hex(4)}"
    outputs = engine.generate(engine_request_id, inputs.prompt_token_ids, inputs.sampling_params)
    try:
        output = await final_output(outputs, client_connected=lambda: _client_connected(request))
    except ClientDisconnected:
        logger.info("client left before %s finished; request aborted", engine_request_id)
        return web.Response(status=CLIENT_CLOSED_STATUS)

    response = to_chat_completion_response(
        output,
        response_id=response_id,
        model=model,
        created=created,
        prompt_tokens=len(inputs.prompt_token_ids),
        render=TokenRenderer(engine.tokenizer, as_token_ids=bool(chat.return_tokens_as_token_ids)),
    )
    return web.json_response(response.model_dump(mode="json"), headers={REQUEST_ID_HEADER: base_id})
