"""Server-sent events as OpenAI's streaming endpoints use them, and writing such a stream to a client.

Every event is one `data: <json>\\n\\n`; the stream ends with `data: [DONE]\\n\\n`. A failure after the
first byte cannot become an HTTP status any more, so it is sent as a `data: {"error": {...}}` event
followed by `[DONE]` (as vLLM does), which OpenAI's clients raise as an APIError, rather than as a
connection that just breaks.

Back-pressure: each write is awaited, so a slow reader slows only its own handler; the engine thread
never waits for it (it queues outputs per request). A client that goes away (a failed write, or the
handler cancelled under `handler_cancellation=True`) gets its event source closed at once, which for a
chat stream closes the engine's output iterator: the request is aborted and its slot freed.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any, Final

from aiohttp import web

from jaxserve.errors import JaxserveError
from jaxserve.http.errors import INTERNAL_ERROR_MESSAGE, error_body

logger = logging.getLogger(__name__)

SSE_HEADERS: Final[Mapping[str, str]] = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
DONE_EVENT: Final = b"data: [DONE]\n\n"


def sse_event(data: str) -> bytes:
    """One `data:` event. JSON never holds a raw line break, and one here would end the event early."""
    if "\n" in data or "\r" in data:
        raise ValueError("an SSE data line cannot contain a line break")
    return b"data: " + data.encode("utf-8") + b"\n\n"


def error_event(exc: JaxserveError) -> bytes:
    """The OpenAI error object (the same one a non-streaming failure returns) as an event."""
    return sse_event(json.dumps(error_body(exc.message, exc.error_type, exc.param, exc.code)))


async def aclose(iterator: AsyncIterator[Any]) -> None:
    """Close an async iterator if it can be closed (async generators can; a closed one ignores it)."""
    close = getattr(iterator, "aclose", None)
    if close is not None:
        await close()


async def send_event_stream(
    request: web.Request,
    events: AsyncIterator[bytes],
    *,
    headers: Mapping[str, str] | None = None,
    name: str | None = None,
) -> web.StreamResponse:
    """Stream `events` (framed SSE bytes) to the client, then `[DONE]`; `events` is closed in every case.

    The first event is awaited before the status line goes out, so whatever fails before the source has
    produced anything (the engine refusing the request, a fault in its first step) propagates as an
    ordinary error response. Once streaming, nothing but cancellation escapes: this must not raise after
    the headers are sent, or the error middleware would try to answer a second time. `name` (e.g. the
    request id) identifies the stream in the log.
    """
    name = name or request.path
    try:
        first = await anext(events, None)
        response = web.StreamResponse(headers={**SSE_HEADERS, **(headers or {})})
        try:
            await response.prepare(request)
            tail = await _write_all(response, first, events)
            await response.write(tail + DONE_EVENT)
            await response.write_eof()
        except ConnectionError:  # a write found the connection gone
            logger.info("client left %s before the stream ended; closing its event source", name)
        return response
    except asyncio.CancelledError:  # handler_cancellation: the connection was lost
        logger.info("client left %s before the stream ended; closing its event source", name)
        raise
    finally:
        await aclose(events)


async def _write_all(
    response: web.StreamResponse, first: bytes | None, events: AsyncIterator[bytes]
) -> bytes:
    """Write every event; return what must precede `[DONE]`: nothing, or the error event for a failure of
    the source. A lost connection (ConnectionError) propagates."""
    try:
        if first is not None:
            await response.write(first)
        async for event in events:
            await response.write(event)
    except ConnectionError:
        raise
    except JaxserveError as exc:
        log = logger.error if exc.status >= 500 else logger.info
        log("stream failed after it started: %s", exc.message)
        return error_event(exc)
    except Exception:
        logger.exception("unexpected error while streaming")
        return error_event(JaxserveError(INTERNAL_ERROR_MESSAGE))
    return b""
