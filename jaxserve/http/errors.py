"""The one place where failures become OpenAI error objects: `{"error": {message, type, param, code}}`.

Typed errors (jaxserve.errors) carry status, type, param and code; request-schema failures are turned
into InvalidRequest here, with the failing field's dotted path as `param`; aiohttp's own HTTP errors
(unknown route, wrong method, body too large) get the same shape. Nothing else reaches a client: an
unexpected exception becomes a generic 500 whose details stay in the log.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from jaxserve.errors import InvalidRequest, JaxserveError, ServerBusy, Unauthorized
from jaxserve.http.protocol.base import ProtocolModel

INTERNAL_ERROR_MESSAGE = "The server had an error while processing your request."

_FIELD_NAME = re.compile(r"^[a-z0-9_]+$")
_UNION_LABELS = frozenset({"str", "int", "float", "bool", "list", "dict", "none"})


class ErrorInfo(ProtocolModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(ProtocolModel):
    error: ErrorInfo


def error_body(
    message: str, error_type: str, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    return ErrorResponse(
        error=ErrorInfo(message=message, type=error_type, param=param, code=code)
    ).model_dump()


def error_response(exc: JaxserveError) -> web.Response:
    """The HTTP response for a typed error."""
    headers = {"WWW-Authenticate": "Bearer"} if isinstance(exc, Unauthorized) else None
    if isinstance(exc, ServerBusy):
        headers = {"Retry-After": str(exc.retry_after_seconds)}
    body = error_body(exc.message, exc.error_type, exc.param, exc.code)
    return web.json_response(body, status=exc.status, headers=headers)


def internal_error_response() -> web.Response:
    return error_response(JaxserveError(INTERNAL_ERROR_MESSAGE))


def http_error_response(exc: web.HTTPException, request: web.Request) -> web.Response:
    """aiohttp's routing and body-size errors, in the OpenAI shape (keeping e.g. the `Allow` header)."""
    if exc.status == 404:
        message = f"Invalid URL ({request.method} {request.path})"
    elif exc.status == 405:
        message = f"Method {request.method} is not allowed for {request.path}"
    elif exc.status == 413:
        message = f"Request body too large (the limit is {request.client_max_size} bytes)"
    else:
        message = exc.reason
    error_type = "invalid_request_error" if exc.status < 500 else "internal_error"
    headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
    return web.json_response(error_body(message, error_type), status=exc.status, headers=headers)


def invalid_request_from_validation(err: ValidationError) -> InvalidRequest:
    """A request-schema failure as a 400 naming the field (the deepest error is the most specific one
    when a union reports one error per alternative)."""
    errors = err.errors(include_url=False)
    if not errors:
        return InvalidRequest("the request does not match the schema")
    first = max(errors, key=lambda e: len(e["loc"]))
    param = param_path(first["loc"])
    if first["type"] == "missing":
        message = f"Missing required parameter: '{param}'"
    elif param:
        message = f"Invalid value for '{param}': {first['msg']}"
    else:
        message = str(first["msg"])
    # Errors at the same path are alternatives of one union; only other paths are further mistakes.
    others = {param_path(e["loc"]) for e in errors} - {param}
    if others:
        message += f" (and {len(others)} more invalid field{'s' if len(others) > 1 else ''})"
    return InvalidRequest(message, param=param or None)


def param_path(loc: Sequence[int | str]) -> str:
    """Dotted path of a pydantic error location, without the labels pydantic adds for union branches.

    Branch labels are our discriminator tags (which contain a colon), type names (`str`, `list[str]`,
    `literal[...]`, model class names): none of them is snake_case, unlike every spec property name.
    """
    kept = []
    for item in loc:
        if isinstance(item, int):
            kept.append(str(item))
        elif _FIELD_NAME.match(item) and item not in _UNION_LABELS:
            kept.append(item)
    return ".".join(kept)
