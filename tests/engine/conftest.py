"""Helpers and sizes for tests over the tiny random-weight engine (its fixtures are in tests/conftest.py,
shared with the HTTP tests)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import TypeVar

import jax

from jaxserve.engine.async_engine import AsyncEngine
from jaxserve.engine.outputs import RequestOutput
from jaxserve.sampling.params import SamplingParams

T = TypeVar("T")

MAX_NUM_SEQS = 4
MAX_MODEL_LEN = 128
PAGE_SIZE = 16
NUM_PAGES = 64

EngineFactory = Callable[..., AsyncEngine]
"""What the `make_engine` fixture yields: AsyncEngine keyword options in, a started engine out."""

# Every backend compilation in the process, for the no-recompilation tests.
backend_compiles: list[float] = []
jax.monitoring.register_event_duration_secs_listener(
    lambda event, seconds, **kwargs: (
        backend_compiles.append(seconds) if event == "/jax/core/compile/backend_compile_duration" else None
    )
)


def prompt_ids(length: int, salt: int) -> list[int]:
    """A deterministic prompt; ids from the tokenizer's byte range (5..260 are <0xHH>), inside the vocab."""
    return [5 + (salt * 31 + i * 7) % 250 for i in range(length)]


async def collect(
    engine: AsyncEngine, prompt: list[int], params: SamplingParams, rid: str, **options: object
) -> RequestOutput:
    """Run one request to its end; return its last (finished) output."""
    last = None
    async for output in engine.generate(rid, prompt, params, **options):  # type: ignore[arg-type]
        last = output
    assert last is not None and last.finished
    return last


async def pool_back_to_full(engine: AsyncEngine) -> bool:
    """Wait (up to 3 s) until the engine is idle with every KV-cache page free."""
    pool = engine.core.scheduler.pool
    for _ in range(300):
        if pool.num_free == pool.num_pages and not engine.core.has_work():
            return True
        await asyncio.sleep(0.01)
    return False


def run(coro: Coroutine[object, object, T]) -> T:
    return asyncio.run(coro)
