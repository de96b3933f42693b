"""`build_app`: the aiohttp application serving the OpenAI-compatible API on top of an engine."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from aiohttp import web
from aiohttp.typedefs import Middleware

from jaxserve.http.cors import CorsPolicy
from jaxserve.http.metrics import METRICS, ServingMetrics
from jaxserve.http.middleware import api_key_middleware, error_middleware
from jaxserve.http.parser_settings import ParserSettings
from jaxserve.http.protocol.chat_request import ChatCompletionRequest
from jaxserve.http.protocol.chat_response import ChatCompletionResponse
from jaxserve.http.protocol.completion import CompletionRequest, CompletionResponse
from jaxserve.http.protocol.model_list import ModelList
from jaxserve.http.protocol.tokenize import (
    DetokenizeRequest,
    DetokenizeResponse,
    TokenizeRequest,
    TokenizeResponse,
)
from jaxserve.http.protocol.version import VersionResponse
from jaxserve.http.routes.chat import create_chat_completion
from jaxserve.http.routes.completions import create_completion
from jaxserve.http.routes.health import health
from jaxserve.http.routes.metrics import metrics
from jaxserve.http.routes.models import list_models
from jaxserve.http.routes.openapi import (
    API_KEY_REQUIRED,
    GUARDED_OUTSIDE_V1,
    OPENAPI_ROUTES,
    ApiRoute,
    openapi_spec,
)
from jaxserve.http.routes.tokenize import detokenize, tokenize
from jaxserve.http.routes.version import version
from jaxserve.http.state import SERVER_STATE, ServerState

if TYPE_CHECKING:
    from jaxserve.engine.protocol import EngineClient

MAX_REQUEST_BYTES = 32 * 1024 * 1024
"""aiohttp's 1 MiB default is below a long conversation at a 128k-token context; 32 MiB is above any
text-only request and still bounds the memory one request can take."""

ROUTES: tuple[ApiRoute, ...] = (
    ApiRoute(
        "POST",
        "/v1/chat/completions",
        create_chat_completion,
        "Create a chat completion",
        request=ChatCompletionRequest,
        response=ChatCompletionResponse,
    ),
    ApiRoute(
        "POST",
        "/v1/completions",
        create_completion,
        "Create a text completion (non-streaming)",
        request=CompletionRequest,
        response=CompletionResponse,
    ),
    ApiRoute("GET", "/v1/models", list_models, "List the served model names", response=ModelList),
    ApiRoute(
        "POST",
        "/tokenize",
        tokenize,
        "Token ids of a prompt, or of a chat rendered as /v1/chat/completions renders it",
        request=TokenizeRequest,
        response=TokenizeResponse,
    ),
    ApiRoute(
        "POST",
        "/detokenize",
        detokenize,
        "Text of token ids",
        request=DetokenizeRequest,
        response=DetokenizeResponse,
    ),
    ApiRoute("GET", "/health", health, "200 while the engine can serve, 503 once it cannot"),
    ApiRoute("GET", "/version", version, "The server version", response=VersionResponse),
    ApiRoute(
        "GET", "/metrics", metrics, "Prometheus metrics (vLLM's names)", response_media_type="text/plain"
    ),
    ApiRoute("GET", "/openapi.json", openapi_spec, "This document", response_media_type="application/json"),
)
"""Every route the application serves; /openapi.json is generated from the same table."""


def build_app(
    engine: EngineClient,
    *,
    served_model_names: list[str],
    api_key: str | None = None,
    allowed_origins: Sequence[str] = ("*",),
    max_request_bytes: int = MAX_REQUEST_BYTES,
    parsers: ParserSettings | None = None,
    metrics_need_api_key: bool = False,
) -> web.Application:
    """The application: routes, error mapping and (when `api_key` is set) bearer-token auth on `/v1`.

    Run it with `handler_cancellation=True` (web.run_app / AppRunner) so a client that disconnects
    cancels its handler at once; without it the handler notices within a poll interval.
    """
    if not served_model_names:
        raise ValueError("served_model_names must name at least one model")
    middlewares: list[Middleware] = [error_middleware]
    if api_key == "":
        raise ValueError("api_key must not be empty (pass None to serve without one)")
    # /metrics is open by default, as in vLLM, so that Prometheus scrapes without a token.
    guarded_outside_v1 = frozenset({"/metrics"}) if metrics_need_api_key else frozenset[str]()
    if api_key is not None:
        middlewares.append(api_key_middleware(api_key, guarded_outside_v1))
    app = web.Application(middlewares=middlewares, client_max_size=max_request_bytes)
    if allowed_origins:
        CorsPolicy(allowed_origins).install(app)
    app[SERVER_STATE] = ServerState(
        engine=engine,
        served_model_names=tuple(served_model_names),
        created=int(time.time()),
        parsers=parsers or ParserSettings(),
    )
    app[METRICS] = ServingMetrics(model_name=served_model_names[0], engine=engine)
    app[OPENAPI_ROUTES] = ROUTES
    app[API_KEY_REQUIRED] = api_key is not None
    app[GUARDED_OUTSIDE_V1] = guarded_outside_v1
    for route in ROUTES:
        if route.method == "GET":
            app.router.add_get(route.path, route.handler)  # also answers HEAD, as aiohttp's GETs do
        else:
            app.router.add_route(route.method, route.path, route.handler)
    return app
