"""`build_app`: the aiohttp application serving the OpenAI-compatible API on top of an engine."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from aiohttp import web
from aiohttp.typedefs import Middleware

from jaxserve.http.middleware import api_key_middleware, error_middleware
from jaxserve.http.routes.chat import create_chat_completion
from jaxserve.http.routes.health import health
from jaxserve.http.routes.models import list_models
from jaxserve.http.state import SERVER_STATE, ServerState

if TYPE_CHECKING:
    from jaxserve.engine.protocol import EngineClient

MAX_REQUEST_BYTES = 32 * 1024 * 1024
"""aiohttp's 1 MiB default is below a long conversation at a 128k-token context; 32 MiB is above any
text-only request and still bounds the memory one request can take."""


def build_app(
    engine: EngineClient, *, served_model_names: list[str], api_key: str | None = None
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
    if api_key is not None:
        middlewares.append(api_key_middleware(api_key))
    app = web.Application(middlewares=middlewares, client_max_size=MAX_REQUEST_BYTES)
    app[SERVER_STATE] = ServerState(
        engine=engine, served_model_names=tuple(served_model_names), created=int(time.time())
    )
    app.router.add_post("/v1/chat/completions", create_chat_completion)
    app.router.add_get("/v1/models", list_models)
    app.router.add_get("/health", health)
    return app
