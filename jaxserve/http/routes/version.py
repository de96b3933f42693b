"""`GET /version`: the server's version, as vLLM's `/version` reports its own."""

from __future__ import annotations

from aiohttp import web

import jaxserve
from jaxserve.http.protocol.version import VersionResponse


async def version(request: web.Request) -> web.StreamResponse:
    return web.json_response(VersionResponse(version=jaxserve.__version__).model_dump(mode="json"))
