"""Reading a JSON request body into a protocol model, with every failure a 400 naming its cause."""

from __future__ import annotations

import json
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from jaxserve.errors import InvalidRequest
from jaxserve.http.errors import invalid_request_from_validation

ModelT = TypeVar("ModelT", bound=BaseModel)


async def read_json_object(request: web.Request) -> dict[str, Any]:
    """The body as a JSON object; parsed here rather than by `request.json()` so that bad UTF-8, bad
    JSON and a non-object all give a clear 400 (and a missing Content-Type is tolerated, as in vLLM)."""
    raw = await request.read()
    try:
        body = json.loads(raw)
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are both ValueErrors
        raise InvalidRequest(f"The request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise InvalidRequest(f"The request body must be a JSON object, not {_json_kind(body)}")
    return body


def parse_body(model: type[ModelT], body: dict[str, Any]) -> ModelT:
    """Validate a body against a protocol model; schema failures become InvalidRequest with the path."""
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise invalid_request_from_validation(exc) from None


def _json_kind(value: object) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    return "a number"
