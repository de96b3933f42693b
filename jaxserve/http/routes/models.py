"""`GET /v1/models`: the served model names, each with the context length."""

from __future__ import annotations

from aiohttp import web

from jaxserve.http.protocol.model_list import ModelCard, ModelList
from jaxserve.http.state import SERVER_STATE


async def list_models(request: web.Request) -> web.StreamResponse:
    """One card per served name; `root` is the first served name, the model all names alias."""
    state = request.app[SERVER_STATE]
    root = state.served_model_names[0]
    cards = [
        ModelCard(id=name, created=state.created, root=root, max_model_len=state.engine.max_model_len)
        for name in state.served_model_names
    ]
    return web.json_response(ModelList(data=cards).model_dump(mode="json"))
