"""`GET /health`: 200 while the engine can serve, 503 once it cannot (for load balancers; no API key)."""

from __future__ import annotations

from aiohttp import web

from jaxserve.http.errors import error_body
from jaxserve.http.state import SERVER_STATE


async def health(request: web.Request) -> web.StreamResponse:
    if request.app[SERVER_STATE].engine.is_healthy():
        return web.Response(status=200)
    return web.json_response(
        error_body("The engine has stopped and cannot serve requests.", "internal_error"), status=503
    )
