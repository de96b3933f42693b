"""Typed errors raised deep in the stack and mapped to HTTP responses in one place (jaxserve.http)."""

from __future__ import annotations


class JaxserveError(Exception):
    """Base class: carries what the OpenAI error object needs."""

    status: int = 500
    error_type: str = "internal_error"

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code


class InvalidRequest(JaxserveError):
    """The request is malformed or asks for something out of range (HTTP 400)."""

    status = 400
    error_type = "invalid_request_error"


class UnsupportedField(InvalidRequest):
    """The request sets a field this server cannot honour yet (HTTP 400 naming the field)."""

    def __init__(self, param: str, reason: str = "is not supported by this server yet") -> None:
        super().__init__(f"'{param}' {reason}", param=param, code="unsupported_field")


class ModelNotFound(JaxserveError):
    """The request names a model this server does not serve (HTTP 404)."""

    status = 404
    error_type = "invalid_request_error"

    def __init__(self, model: str) -> None:
        super().__init__(f"The model '{model}' does not exist.", param="model", code="model_not_found")


class Unauthorized(JaxserveError):
    """Missing or wrong API key (HTTP 401)."""

    status = 401
    error_type = "authentication_error"


class ServerBusy(JaxserveError):
    """Too many requests are already queued (HTTP 503 with Retry-After); the client should retry later."""

    status = 503
    error_type = "server_busy"
    retry_after_seconds = 1


class EngineFault(JaxserveError):
    """The engine failed while running this request (HTTP 500); the server keeps serving others."""

    status = 500
    error_type = "internal_error"


class EngineDead(EngineFault):
    """A fault left the engine unable to serve anyone (e.g. the KV cache was lost): the engine loop stops
    and /health answers 503."""


class RequestTimeout(JaxserveError):
    """The request did not finish within the server's --request-timeout; it was aborted (HTTP 504).

    504 rather than 408: RFC 9110 defines 408 as the server giving up waiting for the client to finish
    sending its request, while here the request arrived whole and the engine behind the HTTP layer did not
    answer in time, which is what 504 (a gateway timing out on what it relays to) describes. OpenAI's
    clients retry both.
    """

    status = 504
    error_type = "timeout_error"

    def __init__(self, seconds: float) -> None:
        super().__init__(
            f"The request did not finish within the server's request timeout ({seconds:g} s) and was "
            "aborted; ask for fewer tokens or retry later.",
            code="request_timeout",
        )


class ModelLoadError(JaxserveError):
    """A model path or file could not be turned into a servable model (start-up error, not HTTP)."""
