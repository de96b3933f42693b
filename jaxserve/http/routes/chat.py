"""`POST /v1/chat/completions`: one `chat.completion`, or with `stream=true` a stream of
`chat.completion.chunk` events (jaxserve.http.sse, jaxserve.http.translate.chunks)."""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
import uuid
from collections.abc import AsyncIterator

from aiohttp import web

from jaxserve.engine.outputs import RequestOutput
from jaxserve.http.generation import ClientDisconnected, final_output
from jaxserve.http.metrics import METRICS
from jaxserve.http.protocol.chat_request import ChatCompletionRequest
from jaxserve.http.request_body import parse_body, read_json_object
from jaxserve.http.sse import aclose, send_event_stream, sse_event
from jaxserve.http.state import SERVER_STATE
from jaxserve.http.translate.chat import chat_prompt, engine_input, response_shape
from jaxserve.http.translate.chunks import ChatChunkBuilder
from jaxserve.http.translate.logprobs import TokenRenderer
from jaxserve.http.translate.response import to_chat_completion_response
from jaxserve.http.translate.streaming import stream_settings

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
    """Validate, translate, run on the engine; answer with one `chat.completion` or, with `stream=true`,
    with server-sent `chat.completion.chunk` events."""
    created = int(time.time())
    state = request.app[SERVER_STATE]
    chat = parse_body(ChatCompletionRequest, await read_json_object(request))
    stream = stream_settings(chat)  # None unless streaming; refuses stream-only options without it
    model = state.resolve_model(chat.model)
    prompt = chat_prompt(chat)  # every refusal that needs no model happens here, before the engine
    engine = state.engine
    # Rendering and tokenising a long conversation takes milliseconds of CPU: off the event loop, so
    # streams of other requests keep flowing meanwhile.
    inputs = await asyncio.to_thread(engine_input, chat, prompt, engine.tokenizer, engine.max_model_len)
    shape = response_shape(chat, prompt)

    base_id = base_request_id(request, chat.request_id)
    response_id = f"chatcmpl-{base_id}"
    # Client-chosen ids need not be unique; the engine's must be, so add a random suffix.
    engine_request_id = f"{response_id}-{secrets.token_hex(4)}"
    render = TokenRenderer(engine.tokenizer, as_token_ids=bool(chat.return_tokens_as_token_ids))
    headers = {REQUEST_ID_HEADER: base_id}
    outputs = engine.generate(engine_request_id, inputs.prompt_token_ids, inputs.sampling_params)

    if stream is not None:
        builder = ChatChunkBuilder(
            response_id=response_id,
            model=model,
            created=created,
            prompt_tokens=len(inputs.prompt_token_ids),
            settings=stream,
            shape=shape,
            render=render,
        )
        events = chunk_events(request.app[METRICS].track(outputs), builder)
        return await send_event_stream(request, events, headers=headers, name=engine_request_id)

    try:
        output = await final_output(
            request.app[METRICS].track(outputs), client_connected=lambda: _client_connected(request)
        )
    except ClientDisconnected:
        logger.info("client left before %s finished; request aborted", engine_request_id)
        return web.Response(status=CLIENT_CLOSED_STATUS)

    response = to_chat_completion_response(
        output,
        response_id=response_id,
        model=model,
        created=created,
        prompt_tokens=len(inputs.prompt_token_ids),
        render=render,
        shape=shape,
    )
    return web.json_response(response.model_dump(mode="json"), headers=headers)


async def chunk_events(
    outputs: AsyncIterator[RequestOutput], builder: ChatChunkBuilder
) -> AsyncIterator[bytes]:
    """The SSE events of one streamed completion, one write's worth per engine output.

    Closing this generator (the client left) closes the engine's iterator from the task that owns it,
    which aborts the request. An EngineFault from the engine propagates to send_event_stream, which turns
    it into an error event.
    """
    try:
        async for output in outputs:
            chunks = builder.chunks_for(output)
            if chunks:
                yield b"".join(sse_event(chunk.to_json()) for chunk in chunks)
        closing = builder.closing_chunks()
        if closing:
            yield b"".join(sse_event(chunk.to_json()) for chunk in closing)
    finally:
        await aclose(outputs)
