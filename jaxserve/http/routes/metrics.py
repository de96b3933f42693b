"""`GET /metrics`: the application's Prometheus metrics (no API key, like vLLM's and /health)."""

from __future__ import annotations

from aiohttp import web
from prometheus_client.exposition import choose_encoder

from jaxserve.http.metrics import METRICS


async def metrics(request: web.Request) -> web.StreamResponse:
    """The text exposition format, or OpenMetrics when the scraper's Accept header asks for it."""
    encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
    body = encoder(request.app[METRICS].registry)
    return web.Response(body=body, headers={"Content-Type": content_type})
