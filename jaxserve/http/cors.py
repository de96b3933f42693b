"""Cross-origin resource sharing for browser clients (`--allowed-origins`, vLLM's default `*`)."""

from __future__ import annotations

from collections.abc import Sequence

from aiohttp import web
from aiohttp.typedefs import Handler

PREFLIGHT_MAX_AGE_SECONDS = 600


class CorsPolicy:
    """Answers preflights (a middleware) and stamps the allow-origin header on every response (a
    response-prepare signal, so streamed responses, whose headers leave inside the handler, get it too)."""

    def __init__(self, allowed_origins: Sequence[str]) -> None:
        self._any = "*" in allowed_origins
        self._allowed = frozenset(allowed_origins)

    def install(self, app: web.Application) -> None:
        app.middlewares.insert(0, self.preflight)  # outermost: before auth, routing and error mapping
        app.on_response_prepare.append(self.stamp)

    def _origin(self, request: web.Request) -> str | None:
        origin = request.headers.get("Origin")
        if origin is None:
            return None
        if self._any:
            return "*"
        return origin if origin in self._allowed else None

    @web.middleware
    async def preflight(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method != "OPTIONS" or "Access-Control-Request-Method" not in request.headers:
            return await handler(request)
        if self._origin(request) is None:
            return web.Response(status=400, text="Disallowed CORS origin")
        return web.Response(
            status=200,
            headers={
                "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
                "Access-Control-Allow-Headers": request.headers.get(
                    "Access-Control-Request-Headers", "Authorization, Content-Type"
                ),
                "Access-Control-Max-Age": str(PREFLIGHT_MAX_AGE_SECONDS),
            },
        )

    async def stamp(self, request: web.Request, response: web.StreamResponse) -> None:
        origin = self._origin(request)
        if origin is not None:
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Vary"] = "Origin"
