"""Helpers and sizes for tests over the tiny random-weight engine (its fixtures are in tests/conftest.py,
shared with the HTTP tests)."""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from jaxserve.engine.async_engine import AsyncEngine
from jaxserve.engine.buckets import BucketConfig
from jaxserve.engine.compilations import CompilationCounter
from jaxserve.engine.outputs import RequestOutput
from jaxserve.engine.runner import ModelRunner
from jaxserve.engine.scheduler import Scheduler, StepPlan
from jaxserve.engine.sequence import Sequence, SequenceStatus
from jaxserve.modeling.tokenizer import Tokenizer
from jaxserve.sampling.params import SamplingParams

T = TypeVar("T")

MAX_NUM_SEQS = 4
MAX_MODEL_LEN = 128
PAGE_SIZE = 16
NUM_PAGES = 64

TINY_BUCKETS = BucketConfig(
    max_num_seqs=MAX_NUM_SEQS,
    max_model_len=MAX_MODEL_LEN,
    page_size=PAGE_SIZE,
    prefill_chunk_sizes=(8, 32),
    max_num_batched_tokens=32,
    min_kv_len=64,
)
"""The tiny engine's step shapes (shared by the float and the int8 runners)."""

EngineFactory = Callable[..., AsyncEngine]
"""What the `make_engine` fixture yields: AsyncEngine keyword options in, a started engine out."""

BACKEND_COMPILES = CompilationCounter()
"""Every backend compilation in the process from import on, for the no-recompilation tests (the counter the
server exports on /metrics)."""


@contextmanager
def engine_factory(runner: ModelRunner, tokenizer_dir: Path) -> Iterator[EngineFactory]:
    """Start engines over `runner` (AsyncEngine keyword options); each is shut down on exit.

    Tests run one at a time, so only one engine thread drives a runner at any moment."""
    tokenizer = Tokenizer.from_path(tokenizer_dir)
    started: list[AsyncEngine] = []

    def make(**options: object) -> AsyncEngine:
        engine = AsyncEngine(runner, tokenizer, **options)  # type: ignore[arg-type]
        engine.start()
        started.append(engine)
        return engine

    try:
        yield make
    finally:
        for engine in started:
            engine.shutdown()


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


def arriving_at_once(
    engine: AsyncEngine, requests: list[tuple[list[int], SamplingParams]]
) -> list[RequestOutput]:
    """Run the requests to their ends, all queued before the engine plans its next step.

    The engine thread wakes at the first request's arrival and may plan a step before the event loop has
    queued the rest: tests that count a step's rows hold its steps until every request is in flight."""
    queued = threading.Event()
    real_step = engine.core.step

    def step_once_all_are_queued() -> None:
        queued.wait()
        engine.core.drain_inbox(block=False)  # the ones queued while this step was held
        real_step()

    async def all_at_once() -> list[RequestOutput]:
        tasks = [
            asyncio.ensure_future(collect(engine, p, s, f"together-{i}")) for i, (p, s) in enumerate(requests)
        ]
        while engine.in_flight < len(requests):
            await asyncio.sleep(0.001)
        queued.set()
        return list(await asyncio.gather(*tasks))

    engine.core.step = step_once_all_are_queued  # type: ignore[method-assign]
    try:
        return run(all_at_once())
    finally:
        del engine.core.step


_sequence_numbers = itertools.count()


def host_sequence(prompt: list[int], *, priority: int = 0) -> Sequence:
    """A request for host-only scheduler tests: no detokenizer, outputs dropped, arrivals in call order."""
    number = next(_sequence_numbers)
    return Sequence(
        request_id=f"r{number}",
        prompt_ids=prompt,
        params=SamplingParams(),
        seed=0,
        max_tokens=100,
        detokenizer=None,  # type: ignore[arg-type]  # the scheduler never detokenises
        emit=lambda output: None,
        arrival=number,
        priority=priority,
    )


def finish_step(scheduler: Scheduler, plan: StepPlan) -> None:
    """What the engine does after running `plan`, minus the model: mark the fed tokens computed, give a
    sequence whose prompt just ended its first token (a resumed one already has its tokens, as in
    EngineCore._prefill), and add a token to every decode."""
    for chunk in plan.prefills:
        scheduler.computed(chunk.seq, chunk.num_tokens)
        if chunk.ends_prefill:
            chunk.seq.status = SequenceStatus.DECODING
            if not chunk.seq.output_ids:
                chunk.seq.output_ids.append(1)
    for seq in plan.decodes:
        scheduler.computed(seq, 1)
        seq.output_ids.append(1)
