"""`POST /v1/completions` (non-streaming): n engine requests per prompt (or a beam search per prompt),
n choices per prompt."""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable

from aiohttp import web

from jaxserve.engine.outputs import RequestOutput
from jaxserve.engine.protocol import EngineClient
from jaxserve.http.generation import (
    ClientDisconnected,
    all_or_none,
    beam_search_outputs,
    choice_streams,
    final_outputs,
    until_done,
)
from jaxserve.http.limits import check_completion_limits
from jaxserve.http.metrics import METRICS, ServingMetrics
from jaxserve.http.protocol.completion import CompletionRequest
from jaxserve.http.request_body import parse_body, read_json_object
from jaxserve.http.routes.chat import (
    CLIENT_CLOSED_STATUS,
    base_request_id,
    client_connected,
    request_id_header,
    scheduling_policy,
)
from jaxserve.http.state import SERVER_STATE
from jaxserve.http.translate.beam import beam_search_params
from jaxserve.http.translate.choices import check_priority, requested_n
from jaxserve.http.translate.completion import CompletionInput, check_completion_request, completion_inputs
from jaxserve.http.translate.completion_response import to_completion_response
from jaxserve.http.translate.logprobs import TokenRenderer

logger = logging.getLogger(__name__)


async def run_batch(
    engine: EngineClient,
    metrics: ServingMetrics,
    completion: CompletionRequest,
    inputs: list[CompletionInput],
    request_id: str,
    connected: Callable[[], bool],
) -> list[list[RequestOutput]]:
    """Every prompt's n choices (or n best beams), all run concurrently so the engine batches them.

    Returns, per prompt in order, its outputs in choice order. The first failure (a refusal by the
    engine, the client leaving) cancels the others, whose iterators are then closed, which aborts them
    in the engine.
    """
    n = requested_n(completion.n)
    if completion.use_beam_search:
        searches = [
            beam_search_outputs(
                engine,
                metrics,
                f"{request_id}-{p}",
                item.prompt_token_ids,
                beam_search_params(completion, item.sampling_params),
                priority=completion.priority,
                cache_salt=completion.cache_salt,
            )
            for p, item in enumerate(inputs)
        ]
        return await until_done(all_or_none(searches), client_connected=connected)
    streams = [
        stream
        for p, item in enumerate(inputs)
        for stream in choice_streams(
            engine,
            metrics,
            f"{request_id}-{p}",
            item.prompt_token_ids,
            item.sampling_params,
            n,
            priority=completion.priority,
            cache_salt=completion.cache_salt,
        )
    ]
    outputs = await final_outputs(streams, client_connected=connected)
    return [outputs[p * n : (p + 1) * n] for p in range(len(inputs))]


async def create_completion(request: web.Request) -> web.StreamResponse:
    """Validate, tokenise every prompt, run them on the engine, answer with one `text_completion`."""
    created = int(time.time())
    state = request.app[SERVER_STATE]
    completion = parse_body(CompletionRequest, await read_json_object(request))
    check_completion_limits(completion)
    model = state.resolve_model(completion.model)
    check_completion_request(completion)  # every refusal that needs no tokenizer happens here
    engine = state.engine
    check_priority(completion.priority, scheduling_policy(engine))
    grammars = getattr(engine, "grammars", None)  # compiles structured-output constraints, off the loop too
    inputs = await asyncio.to_thread(
        completion_inputs, completion, engine.tokenizer, engine.max_model_len, grammars
    )

    base_id = base_request_id(request, completion.request_id)
    response_id = f"cmpl-{base_id}"
    # Client-chosen ids need not be unique; the engine's must be, so add a random suffix.
    engine_request_id = f"{response_id}-{secrets.token_hex(4)}"
    try:
        outputs = await run_batch(
            engine,
            request.app[METRICS],
            completion,
            inputs,
            engine_request_id,
            lambda: client_connected(request),
        )
    except ClientDisconnected:
        logger.info("client left before %s finished; request aborted", engine_request_id)
        return web.Response(status=CLIENT_CLOSED_STATUS)

    response = to_completion_response(
        outputs,
        inputs,
        completion,
        response_id=response_id,
        model=model,
        created=created,
        render=TokenRenderer(engine.tokenizer, as_token_ids=bool(completion.return_tokens_as_token_ids)),
    )
    return web.json_response(response.model_dump(mode="json"), headers=request_id_header(base_id))
