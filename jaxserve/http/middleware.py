"""Request middleware: error mapping (outermost, so it sees every failure) and API-key checking."""

from __future__ import annotations

import hmac
import logging

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from jaxserve.errors import JaxserveError, Unauthorized
from jaxserve.http.errors import error_response, http_error_response, internal_error_response

logger = logging.getLogger(__name__)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn every exception into an OpenAI error object; only unexpected ones are logged with a trace."""
    try:
        return await handler(request)
    except JaxserveError as exc:
        if exc.status >= 500:
            logger.error("%s %s failed: %s", request.method, request.path, exc.message, exc_info=exc)
        else:
            logger.info("%s %s -> %d %s", request.method, request.path, exc.status, exc.message)
        return error_response(exc)
    except web.HTTPException as exc:
        if exc.status < 400:  # redirects and the like are not errors
            raise
        return http_error_response(exc, request)
    except Exception:
        logger.exception("unexpected error in %s %s", request.method, request.path)
        return internal_error_response()


def needs_api_key(path: str, guarded_outside_v1: frozenset[str] = frozenset()) -> bool:
    """Whether a server with an API key guards `path`: the OpenAI API (`/v1/...`), plus the paths it was
    told to guard as well (`/metrics` with `--metrics-need-api-key`)."""
    return path == "/v1" or path.startswith("/v1/") or path in guarded_outside_v1


def api_key_middleware(api_key: str, also_guarded: frozenset[str] = frozenset()) -> Middleware:
    """Require `Authorization: Bearer <api_key>` on the OpenAI API (`/v1/...`) and on the paths in
    `also_guarded` (e.g. `/metrics`); health checks stay open.

    A path counts as guarded if it looks like one or if the route it resolved to is one, so no spelling
    of a path that reaches a guarded handler escapes the check. The key itself is never logged.
    """
    expected = f"Bearer {api_key}".encode()

    @web.middleware
    async def check_api_key(request: web.Request, handler: Handler) -> web.StreamResponse:
        resource = request.match_info.route.resource
        if needs_api_key(request.path, also_guarded) or (
            resource is not None and needs_api_key(resource.canonical, also_guarded)
        ):
            supplied = request.headers.get("Authorization", "").encode("utf-8", "surrogateescape")
            if not hmac.compare_digest(supplied, expected):  # constant time: no key guessing by timing
                raise Unauthorized("Invalid or missing API key", code="invalid_api_key")
        return await handler(request)

    return check_api_key
