"""`POST /v1/completions` (non-streaming): one engine request per prompt, one choice per prompt."""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable

from aiohttp import web

from jaxserve.engine.outputs import RequestOutput
from jaxserve.engine.protocol import EngineClient
from jaxserve.http.generation import ClientDisconnected, final_output
from jaxserve.http.metrics import METRICS, ServingMetrics
from jaxserve.http.protocol.completion import CompletionRequest
from jaxserve.http.request_body import parse_body, read_json_object
from jaxserve.http.routes.chat import CLIENT_CLOSED_STATUS, REQUEST_ID_HEADER, base_request_id
from jaxserve.http.state import SERVER_STATE
from jaxserve.http.translate.completion import CompletionInput, check_completion_request, completion_inputs
from jaxserve.http.translate.completion_response import to_completion_response
from jaxserve.http.translate.logprobs import TokenRenderer

logger = logging.getLogger(__name__)


def _client_connected(request: web.Request) -> Callable[[], bool]:
    def connected() -> bool:
        transport = request.transport
        return transport is not None and not transport.is_closing()

    return connected


async def run_batch(
    engine: EngineClient,
    metrics: ServingMetrics,
    inputs: list[CompletionInput],
    request_id: str,
    client_connected: Callable[[], bool],
) -> list[RequestOutput]:
    """Run every prompt concurrently (the engine batches them) and return the final outputs in order.

    The first failure (a refusal by the engine, the client leaving) cancels the others, whose iterators
    are then closed, which aborts them in the engine.
    """
    tasks = [
        asyncio.ensure_future(
            final_output(
                metrics.track(
                    engine.generate(f"{request_id}-{index}", item.prompt_token_ids, item.sampling_params)
                ),
                client_connected=client_connected,
            )
        )
        for index, item in enumerate(inputs)
    ]
    try:
        return list(await asyncio.gather(*tasks))
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)  # wait for the aborts; errors already raised


async def create_completion(request: web.Request) -> web.StreamResponse:
    """Validate, tokenise every prompt, run them on the engine, answer with one `text_completion`."""
    created = int(time.time())
    state = request.app[SERVER_STATE]
    completion = parse_body(CompletionRequest, await read_json_object(request))
    model = state.resolve_model(completion.model)
    check_completion_request(completion)  # every refusal that needs no tokenizer happens here
    engine = state.engine
    inputs = await asyncio.to_thread(completion_inputs, completion, engine.tokenizer, engine.max_model_len)

    base_id = base_request_id(request, completion.request_id)
    response_id = f"cmpl-{base_id}"
    # Client-chosen ids need not be unique; the engine's must be, so add a random suffix.
    engine_request_id = f"{response_id}-{secrets.token_hex(4)}"
    try:
        outputs = await run_batch(
            engine, request.app[METRICS], inputs, engine_request_id, _client_connected(request)
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
    return web.json_response(response.model_dump(mode="json"), headers={REQUEST_ID_HEADER: base_id})
