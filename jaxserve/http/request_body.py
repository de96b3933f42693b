"""Reading a JSON request body into a protocol model, with every failure a 400 naming its cause."""

from __future__ import annotations

import json
import re
from typing import Any, TypeVar

from aiohttp import web
from aiohttp.hdrs import CONTENT_TYPE
from aiohttp.web_protocol import RequestPayloadError
from pydantic import BaseModel, ValidationError

from jaxserve.errors import InvalidRequest
from jaxserve.http.errors import invalid_request_from_validation

ModelT = TypeVar("ModelT", bound=BaseModel)


async def read_json_object(request: web.Request) -> dict[str, Any]:
    """The body as a JSON object; parsed here rather than by `request.json()` so that bad UTF-8, bad
    JSON and a non-object all give a clear 400.

    A missing Content-Type is tolerated and any other than JSON refused, as in vLLM (FastAPI parses a body
    as JSON only then): a form post or text/plain is not read as JSON by accident."""
    if CONTENT_TYPE in request.headers and not _is_json_media_type(request.content_type):
        raise InvalidRequest(f"Content-Type must be application/json, not {request.content_type!r}")
    try:
        raw = await request.read()
    except RequestPayloadError as exc:  # e.g. a Content-Encoding the body does not decode with
        raise InvalidRequest(f"The request body could not be read: {_reason(exc)}") from None
    try:
        body = json.loads(raw, parse_constant=_refuse_constant)
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are both ValueErrors
        raise InvalidRequest(f"The request body is not valid JSON: {exc}") from None
    except RecursionError:  # the parser recurses per nesting level: `[[[[...` a few thousand deep
        raise InvalidRequest("The request body is nested too deeply to parse") from None
    if not isinstance(body, dict):
        raise InvalidRequest(f"The request body must be a JSON object, not {_json_kind(body)}")
    if _SURROGATE_ESCAPE.search(raw):
        _refuse_lone_surrogates(body)
    return body


def parse_body(model: type[ModelT], body: dict[str, Any]) -> ModelT:
    """Validate a body against a protocol model; schema failures become InvalidRequest with the path."""
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise invalid_request_from_validation(exc) from None


_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
"""A `\\uD800`-`\\uDFFF` escape: the only way a JSON body can carry a surrogate (raw UTF-8 cannot)."""


def _refuse_lone_surrogates(body: dict[str, Any]) -> None:
    """A string with an unpaired surrogate (`"\\ud800"`) parses, but has no UTF-8 form, so the tokenizer
    and every encoder after it would fail on it: refuse it, naming where it is. Iterative, as the body
    may be nested as deep as the parser allows."""
    stack: list[tuple[str, Any]] = [("", body)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, dict):
            for key, item in value.items():
                child = f"{path}.{key}" if path else str(key)
                _check_encodable(key, child)
                stack.append((child, item))
        elif isinstance(value, list):
            stack.extend((f"{path}.{index}", item) for index, item in enumerate(value))
        elif isinstance(value, str):
            _check_encodable(value, path)


def _check_encodable(text: str, path: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidRequest(
            f"Invalid value for '{path}': a string contains an unpaired UTF-16 surrogate", param=path
        ) from None


def _reason(exc: Exception) -> str:
    """aiohttp's payload errors carry a multi-line message; the last line says what failed."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__


def _is_json_media_type(media_type: str) -> bool:
    """`application/json` or a structured `application/<x>+json` type (parameters already stripped)."""
    kind, _, subtype = media_type.lower().partition("/")
    return kind == "application" and (subtype == "json" or subtype.endswith("+json"))


def _refuse_constant(token: str) -> Any:
    """Python's parser reads `NaN`, `Infinity` and `-Infinity`, which JSON (RFC 8259) does not have. Refused
    here, once, so that no field needs its own NaN check: comparisons with NaN are false, and fields other
    than the sampling parameters (schemas, tool arguments, vllm_xargs) are passed on unchecked."""
    raise ValueError(f"{token} is not a JSON number")


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
