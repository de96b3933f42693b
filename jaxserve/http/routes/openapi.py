"""`GET /openapi.json`: an OpenAPI 3.1 document generated from the route table and the protocol models.

The application registers its routes from a table of `ApiRoute`s (see `jaxserve.http.app`), and this
document is built from the same table, with every schema taken from the pydantic model the handler
parses or returns (`models_json_schema`): a route cannot exist undocumented, nor a documented schema
drift from the code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from aiohttp import web
from aiohttp.typedefs import Handler
from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

import jaxserve
from jaxserve.http.errors import ErrorResponse
from jaxserve.http.middleware import needs_api_key

OPENAPI_VERSION = "3.1.0"
"""3.1 because its schema objects are JSON Schema 2020-12, which is what pydantic emits."""

_REF_TEMPLATE = "#/components/schemas/{model}"


@dataclass(frozen=True)
class ApiRoute:
    """One route: what aiohttp needs to serve it and what the document needs to describe it.

    `request` is the model the handler parses its JSON body with, `response` the model of its success
    body; a non-JSON success body (e.g. Prometheus text) names its media type instead.
    """

    method: str
    path: str
    handler: Handler
    summary: str
    request: type[BaseModel] | None = None
    response: type[BaseModel] | None = None
    response_media_type: str | None = None


OPENAPI_ROUTES: Final = web.AppKey[tuple[ApiRoute, ...]]("jaxserve_openapi_routes")
"""The application's route table (a tuple of ApiRoute), for the document."""

API_KEY_REQUIRED: Final = web.AppKey("jaxserve_api_key_required", bool)
"""Whether the application was built with an API key (the document then declares bearer auth)."""

GUARDED_OUTSIDE_V1: Final = web.AppKey("jaxserve_guarded_outside_v1", frozenset)
"""Paths outside `/v1` that also need the API key (when one is set)."""


def openapi_document(
    routes: tuple[ApiRoute, ...],
    *,
    api_key_required: bool,
    guarded_outside_v1: frozenset[str] = frozenset(),
) -> dict[str, Any]:
    """The document for `routes`; with `api_key_required`, the routes that check it say so."""
    models: list[tuple[type[BaseModel], JsonSchemaMode]] = [(ErrorResponse, "serialization")]
    for route in routes:
        if route.request is not None:
            models.append((route.request, "validation"))
        if route.response is not None:
            models.append((route.response, "serialization"))
    refs, definitions = models_json_schema(list(dict.fromkeys(models)), ref_template=_REF_TEMPLATE)

    def ref(model: type[BaseModel], mode: JsonSchemaMode) -> dict[str, Any]:
        return dict(refs[(model, mode)])

    error = {
        "description": "An OpenAI error object",
        "content": {"application/json": {"schema": ref(ErrorResponse, "serialization")}},
    }
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        operation: dict[str, Any] = {"summary": route.summary, "operationId": route.handler.__name__}
        if route.request is not None:
            operation["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": ref(route.request, "validation")}},
            }
        success: dict[str, Any] = {"description": "Success"}
        if route.response is not None:
            success["content"] = {"application/json": {"schema": ref(route.response, "serialization")}}
        elif route.response_media_type is not None:
            success["content"] = {route.response_media_type: {"schema": {"type": "string"}}}
        operation["responses"] = {"200": success, "default": error}
        if api_key_required and needs_api_key(route.path, guarded_outside_v1):
            operation["security"] = [{"bearerAuth": []}]
        paths.setdefault(route.path, {})[route.method.lower()] = operation

    components: dict[str, Any] = {"schemas": definitions.get("$defs", {})}
    if api_key_required:
        components["securitySchemes"] = {"bearerAuth": {"type": "http", "scheme": "bearer"}}
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "jaxserve",
            "version": jaxserve.__version__,
            "description": "vLLM's extended OpenAI API, served on JAX.",
        },
        "paths": paths,
        "components": components,
    }


async def openapi_spec(request: web.Request) -> web.StreamResponse:
    """Built per request: it is rarely fetched, and building it costs milliseconds."""
    document = openapi_document(
        request.app[OPENAPI_ROUTES],
        api_key_required=request.app[API_KEY_REQUIRED],
        guarded_outside_v1=request.app[GUARDED_OUTSIDE_V1],
    )
    return web.json_response(document)
