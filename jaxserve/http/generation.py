"""Waiting for a request's final output while watching the client, so a departed client frees the engine.

aiohttp does not cancel a handler when its client disconnects unless the server was started with
`handler_cancellation=True`, so the wait here also polls the connection. Either way the engine's output
iterator is closed, which the engine protocol defines as "abort this request and free its resources".
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

from jaxserve.engine.outputs import RequestOutput

DISCONNECT_POLL_SECONDS = 0.5
"""How often to look at the connection: cheap (one attribute read), and half a second of wasted decoding
for a vanished client is negligible beside the cost of a request."""


class ClientDisconnected(Exception):
    """The client went away before its completion was ready; the request has been aborted."""


async def final_output(
    outputs: AsyncIterator[RequestOutput], *, client_connected: Callable[[], bool]
) -> RequestOutput:
    """The output with finished=True; raises ClientDisconnected (after aborting) if the client leaves."""
    consumer = asyncio.ensure_future(_drain(outputs))
    try:
        while True:
            done, _ = await asyncio.wait({consumer}, timeout=DISCONNECT_POLL_SECONDS)
            if done:
                return consumer.result()
            if not client_connected():
                raise ClientDisconnected
    finally:
        if not consumer.done():
            # Cancelling the consumer throws CancelledError into the engine's iterator at its await point,
            # which closes it from the task that owns it (aclose() from another task would fail while it
            # is running). asyncio.wait does not re-raise the consumer's CancelledError, so a cancellation
            # of this task itself still propagates.
            consumer.cancel()
            await asyncio.wait({consumer})
        if not consumer.cancelled():
            consumer.exception()  # mark retrieved: it was raised above via result(), or is moot


async def _drain(outputs: AsyncIterator[RequestOutput]) -> RequestOutput:
    try:
        async for output in outputs:
            if output.finished:
                return output
    finally:
        aclose = getattr(outputs, "aclose", None)
        if aclose is not None:
            await aclose()
    raise RuntimeError("the engine's output stream ended before the request finished")
