"""`POST /v1/chat/completions`: one `chat.completion`, or with `stream=true` a stream of
`chat.completion.chunk` events (jaxserve.http.sse, jaxserve.http.translate.chunks)."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
import secrets
import time
import uuid
from collections.abc import AsyncIterator

from aiohttp import web

from jaxserve.engine.outputs import RequestOutput
from jaxserve.http.generation import (
    ClientDisconnected,
    beam_search_outputs,
    choice_streams,
    final_outputs,
    finished_stream,
    merged,
    until_done,
)
from jaxserve.http.limits import check_chat_limits
from jaxserve.http.metrics import METRICS
from jaxserve.http.protocol.chat_request import ChatCompletionRequest
from jaxserve.http.request_body import parse_body, read_json_object
from jaxserve.http.sse import aclose, send_event_stream, sse_event
from jaxserve.http.state import SERVER_STATE
from jaxserve.http.translate.auto_tools import check_tool_choice, without_excluded_tools
from jaxserve.http.translate.beam import beam_search_params
from jaxserve.http.translate.chat import chat_prompt, engine_input, response_shape
from jaxserve.http.translate.choices import check_priority, requested_n
from jaxserve.http.translate.chunks import ChatChunkBuilder
from jaxserve.http.translate.logprobs import TokenRenderer
from jaxserve.http.translate.output_parsing import output_parsing
from jaxserve.http.translate.response import to_chat_completion_response
from jaxserve.http.translate.streaming import StreamSettings, stream_settings

logger = logging.getLogger(__name__)

REQUEST_ID_HEADER = "X-Request-Id"

CLIENT_CLOSED_STATUS = 499
"""nginx's "client closed request": never seen by the departed client, but clear in access logs."""


def base_request_id(request: web.Request, body_request_id: str | None) -> str:
    """vLLM's precedence: the X-Request-Id header, then the body's request_id, then a random id."""
    return request.headers.get(REQUEST_ID_HEADER) or body_request_id or uuid.uuid4().hex


_HEADER_FORBIDDEN = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
"""Control characters (tab aside): aiohttp refuses to write them in a header, after the handler returned."""


def request_id_header(base_id: str) -> dict[str, str]:
    """The X-Request-Id response header, unless the id (from the body's `request_id`) holds a character
    no header may carry: writing it would drop the connection instead of answering. The id is still the
    response's `id`."""
    return {} if _HEADER_FORBIDDEN.search(base_id) else {REQUEST_ID_HEADER: base_id}


def client_connected(request: web.Request) -> bool:
    """Whether the client's connection is still open."""
    transport = request.transport
    return transport is not None and not transport.is_closing()


def scheduling_policy(engine: object) -> str:
    """The engine's scheduling policy ("fcfs" for stand-ins that do not say)."""
    return str(getattr(engine, "scheduling_policy", "fcfs"))


async def create_chat_completion(request: web.Request) -> web.StreamResponse:
    """Validate, translate, run on the engine; answer with one `chat.completion` or, with `stream=true`,
    with server-sent `chat.completion.chunk` events.

    `n` choices are n engine requests run together (choice i seeded with seed + i); with
    `use_beam_search` they are the n best beams of one beam search, streamed (if asked) once complete,
    as vLLM does. Any failure fails the whole request; a departed client aborts all its engine requests.
    """
    created = int(time.time())
    state = request.app[SERVER_STATE]
    chat = parse_body(ChatCompletionRequest, await read_json_object(request))
    check_chat_limits(chat)
    stream = stream_settings(chat)  # None unless streaming; refuses stream-only options without it
    model = state.resolve_model(chat.model)
    chat = without_excluded_tools(chat, state.parsers)
    prompt = chat_prompt(chat)  # every refusal that needs no model happens here, before the engine
    check_tool_choice(chat, state.parsers)  # "auto" needs the server's tool-call parser
    engine = state.engine
    check_priority(chat.priority, scheduling_policy(engine))
    n = requested_n(chat.n)
    # Rendering and tokenising a long conversation takes milliseconds of CPU: off the event loop, so
    # streams of other requests keep flowing meanwhile.
    # Compiling a structured-output grammar (milliseconds to seconds for large schemas) happens there too.
    grammars = getattr(engine, "grammars", None)
    inputs = await asyncio.to_thread(
        engine_input, chat, prompt, engine.tokenizer, engine.max_model_len, grammars
    )
    shape = response_shape(chat, prompt)
    parsing = output_parsing(chat, state.parsers, engine.tokenizer, inputs.prompt_token_ids)
    if parsing is not None and parsing.keeps_special_tokens:
        # The format's markers are special tokens: keep them in the text so they can be parsed (vLLM).
        params = dataclasses.replace(inputs.sampling_params, skip_special_tokens=False)
        inputs = dataclasses.replace(inputs, sampling_params=params)

    base_id = base_request_id(request, chat.request_id)
    response_id = f"chatcmpl-{base_id}"
    # Client-chosen ids need not be unique; the engine's must be, so add a random suffix.
    engine_request_id = f"{response_id}-{secrets.token_hex(4)}"
    render = TokenRenderer(engine.tokenizer, as_token_ids=bool(chat.return_tokens_as_token_ids))
    headers = request_id_header(base_id)
    metrics = request.app[METRICS]
    prompt_ids = inputs.prompt_token_ids

    def builder(choices: int) -> ChatChunkBuilder:
        return ChatChunkBuilder(
            response_id=response_id,
            model=model,
            created=created,
            prompt_tokens=len(prompt_ids),
            settings=stream or StreamSettings(),
            shape=shape,
            render=render,
            n=choices,
            parsing=parsing,
        )

    if chat.use_beam_search:
        beam = beam_search_params(chat, inputs.sampling_params)
        work = beam_search_outputs(
            engine,
            metrics,
            engine_request_id,
            prompt_ids,
            beam,
            priority=chat.priority,
            cache_salt=chat.cache_salt,
        )
        try:
            outputs = await until_done(work, client_connected=lambda: client_connected(request))
        except ClientDisconnected:
            logger.info("client left before %s finished; beam search aborted", engine_request_id)
            return web.Response(status=CLIENT_CLOSED_STATUS)
        if stream is not None:
            events = chunk_events(finished_stream(outputs), builder(len(outputs)))
            return await send_event_stream(request, events, headers=headers, name=engine_request_id)
    else:
        streams = choice_streams(
            engine,
            metrics,
            engine_request_id,
            prompt_ids,
            inputs.sampling_params,
            n,
            priority=chat.priority,
            cache_salt=chat.cache_salt,
        )
        if stream is not None:
            events = chunk_events(merged(streams), builder(n))
            return await send_event_stream(request, events, headers=headers, name=engine_request_id)
        try:
            outputs = await final_outputs(streams, client_connected=lambda: client_connected(request))
        except ClientDisconnected:
            logger.info("client left before %s finished; request aborted", engine_request_id)
            return web.Response(status=CLIENT_CLOSED_STATUS)

    response = to_chat_completion_response(
        outputs,
        response_id=response_id,
        model=model,
        created=created,
        prompt_tokens=len(prompt_ids),
        render=render,
        shape=shape,
        parsing=parsing,
    )
    return web.json_response(response.model_dump(mode="json"), headers=headers)


async def chunk_events(
    outputs: AsyncIterator[tuple[int, RequestOutput]], builder: ChatChunkBuilder
) -> AsyncIterator[bytes]:
    """The SSE events of one streamed completion, one write's worth per engine output of any choice.

    Closing this generator (the client left) closes the outputs' iterator, which closes the engine's
    iterators from the tasks that own them and so aborts every choice. An EngineFault from the engine
    propagates to send_event_stream, which turns it into an error event.
    """
    try:
        async for index, output in outputs:
            chunks = builder.chunks_for(output, index)
            if chunks:
                yield b"".join(sse_event(chunk.to_json()) for chunk in chunks)
        closing = builder.closing_chunks()
        if closing:
            yield b"".join(sse_event(chunk.to_json()) for chunk in closing)
    finally:
        await aclose(outputs)
