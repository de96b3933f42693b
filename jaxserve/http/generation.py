"""Running a request's engine work while watching the client, so a departed client frees the engine.

A request may be several engine requests (`n` choices, a batch of prompts, the steps of a beam search);
they run concurrently so the engine batches them, and they stand or fall together: the first failure
closes the others, and so does the client leaving. Closing an engine output iterator is what the engine
protocol defines as "abort this request and free its resources".

aiohttp does not cancel a handler when its client disconnects unless the server was started with
`handler_cancellation=True`, so the waits here also poll the connection.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from typing import Any, TypeVar

from jaxserve.engine.beam_search import BeamSearchParams, beam_search
from jaxserve.engine.outputs import RequestOutput
from jaxserve.engine.protocol import EngineClient
from jaxserve.http.metrics import ServingMetrics
from jaxserve.http.translate.choices import choice_params, choice_request_id
from jaxserve.sampling.params import SamplingParams

DISCONNECT_POLL_SECONDS = 0.5
"""How often to look at the connection: cheap (one attribute read), and half a second of wasted decoding
for a vanished client is negligible beside the cost of a request."""

T = TypeVar("T")


class ClientDisconnected(Exception):
    """The client went away before its completion was ready; the request has been aborted."""


async def until_done(work: Awaitable[T], *, client_connected: Callable[[], bool]) -> T:
    """The result of `work`; raises ClientDisconnected (after cancelling `work`) if the client leaves."""
    task = asyncio.ensure_future(work)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=DISCONNECT_POLL_SECONDS)
            if done:
                return task.result()
            if not client_connected():
                raise ClientDisconnected
    finally:
        if not task.done():
            # Cancelling throws CancelledError into the engine iterators at their await points, which
            # closes them from the task that owns them (aclose() from another task would fail while they
            # are running). asyncio.wait does not re-raise the task's CancelledError, so a cancellation
            # of this task itself still propagates.
            task.cancel()
            await asyncio.wait({task})
        if not task.cancelled():
            task.exception()  # mark retrieved: it was raised above via result(), or is moot


async def all_or_none(awaitables: Iterable[Awaitable[T]]) -> list[T]:
    """Run concurrently and return every result in order; the first failure (or a cancellation) cancels
    the rest and waits for them to wind down before propagating."""
    tasks: list[asyncio.Future[T]] = [asyncio.ensure_future(a) for a in awaitables]
    try:
        return list(await asyncio.gather(*tasks))
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)  # wait for the aborts; errors already raised


async def final_output(
    outputs: AsyncIterator[RequestOutput], *, client_connected: Callable[[], bool]
) -> RequestOutput:
    """The output with finished=True; raises ClientDisconnected (after aborting) if the client leaves."""
    return await until_done(_drain(outputs), client_connected=client_connected)


async def final_outputs(
    streams: Sequence[AsyncIterator[RequestOutput]], *, client_connected: Callable[[], bool]
) -> list[RequestOutput]:
    """Every stream's finished output, in order. A failure of one, or the client leaving, aborts all."""
    return await until_done(all_or_none(_drain(s) for s in streams), client_connected=client_connected)


async def merged(streams: Sequence[AsyncIterator[RequestOutput]]) -> AsyncIterator[tuple[int, RequestOutput]]:
    """The outputs of all streams as they arrive, each with its stream's index, until all have ended.

    The first failure of any stream is raised here once the outputs before it are delivered. Closing
    this iterator (or a failure) closes every stream still running, which aborts its engine request.
    """
    queue: asyncio.Queue[tuple[int, RequestOutput | Exception | None]] = asyncio.Queue()

    async def pump(index: int, stream: AsyncIterator[RequestOutput]) -> None:
        try:
            async for output in stream:
                queue.put_nowait((index, output))
            queue.put_nowait((index, None))
        except Exception as exc:
            queue.put_nowait((index, exc))
        finally:
            await aclose(stream)

    tasks = [asyncio.ensure_future(pump(index, stream)) for index, stream in enumerate(streams)]
    try:
        running = len(tasks)
        while running:
            index, item = await queue.get()
            if item is None:
                running -= 1
            elif isinstance(item, Exception):
                raise item
            else:
                yield index, item
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def choice_streams(
    engine: EngineClient,
    metrics: ServingMetrics,
    request_id: str,
    prompt_token_ids: list[int],
    params: SamplingParams,
    n: int,
    *,
    priority: int = 0,
    cache_salt: str | None = None,
) -> list[AsyncIterator[RequestOutput]]:
    """The engine output streams (timed for the metrics) of a prompt's n choices; choice i is seeded
    seed + i (`translate.choices.choice_params`). Nothing reaches the engine until a stream is read."""
    return [
        metrics.track(
            engine.generate(
                choice_request_id(request_id, index, n),
                prompt_token_ids,
                choice_params(params, index),
                priority=priority,
                cache_salt=cache_salt,
            )
        )
        for index in range(n)
    ]


async def beam_search_outputs(
    engine: EngineClient,
    metrics: ServingMetrics,
    request_id: str,
    prompt_token_ids: list[int],
    params: BeamSearchParams,
    *,
    priority: int = 0,
    cache_salt: str | None = None,
) -> list[RequestOutput]:
    """The finished beams of one prompt as choice outputs, best first, recorded in the metrics as one
    request (its step requests are an implementation detail: usage and metrics count what the answer
    holds, not every re-read prompt)."""
    started = time.perf_counter()
    beams = await beam_search(
        engine, request_id, prompt_token_ids, params, priority=priority, cache_salt=cache_salt
    )
    outputs = [beam.output for beam in beams]
    metrics.request_finished(
        prompt_tokens=len(prompt_token_ids),
        generation_tokens=sum(len(output.token_ids) for output in outputs),
        ttft=None,
        inter_token_latencies=(),
        e2e=time.perf_counter() - started,
        cached_tokens=outputs[0].num_cached_tokens if outputs else 0,
    )
    return outputs


async def finished_stream(outputs: Sequence[RequestOutput]) -> AsyncIterator[tuple[int, RequestOutput]]:
    """Outputs that are already final, as the stream `merged` would make of them (beam search answers
    are complete before the first chunk can be sent)."""
    for index, output in enumerate(outputs):
        yield index, output


async def aclose(iterator: AsyncIterator[Any]) -> None:
    """Close an async iterator if it can be closed (async generators can; a closed one ignores it)."""
    close = getattr(iterator, "aclose", None)
    if close is not None:
        await close()


async def _drain(outputs: AsyncIterator[RequestOutput]) -> RequestOutput:
    try:
        async for output in outputs:
            if output.finished:
                return output
    finally:
        await aclose(outputs)
    raise RuntimeError("the engine's output stream ended before the request finished")
