"""A warmed tiny random-weight runner shared by the engine tests, and engines built over it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import TypeVar

import jax
import pytest

from jaxserve.engine.async_engine import AsyncEngine
from jaxserve.engine.buckets import BucketConfig
from jaxserve.engine.outputs import RequestOutput
from jaxserve.engine.runner import ModelRunner
from jaxserve.modeling.loader import load_model
from jaxserve.modeling.tokenizer import Tokenizer
from jaxserve.sampling.params import SamplingParams
from tests.modeling.tiny_checkpoints import write_sentencepiece_tokenizer, write_tiny_checkpoint

T = TypeVar("T")

MAX_NUM_SEQS = 4
MAX_MODEL_LEN = 128
PAGE_SIZE = 16
NUM_PAGES = 64

# Every backend compilation in the process, for the no-recompilation tests.
backend_compiles: list[float] = []
jax.monitoring.register_event_duration_secs_listener(
    lambda event, seconds, **kwargs: (
        backend_compiles.append(seconds) if event == "/jax/core/compile/backend_compile_duration" else None
    )
)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory: Path = tmp_path_factory.mktemp("tiny")
    write_tiny_checkpoint("smollm2", directory)
    write_sentencepiece_tokenizer(directory)
    return directory


@pytest.fixture(scope="session")
def tiny_runner(tiny_model_dir: Path) -> ModelRunner:
    """Compiled once for the session: engines over it differ only in host-side scheduling."""
    buckets = BucketConfig(
        max_num_seqs=MAX_NUM_SEQS,
        max_model_len=MAX_MODEL_LEN,
        page_size=PAGE_SIZE,
        prefill_chunk_sizes=(8, 32),
        max_num_batched_tokens=32,
        min_kv_len=64,
    )
    runner = ModelRunner(load_model(tiny_model_dir, "float32"), buckets, NUM_PAGES)
    runner.warm_up()
    return runner


EngineFactory = Callable[..., AsyncEngine]


@pytest.fixture
def make_engine(tiny_runner: ModelRunner, tiny_model_dir: Path) -> Iterator[EngineFactory]:
    """Start engines over the shared runner (AsyncEngine keyword options); each is shut down after the test.

    Tests run one at a time, so only one engine thread drives the runner at any moment."""
    tokenizer = Tokenizer.from_path(tiny_model_dir)
    started: list[AsyncEngine] = []

    def make(**options: object) -> AsyncEngine:
        engine = AsyncEngine(tiny_runner, tokenizer, **options)  # type: ignore[arg-type]
        engine.start()
        started.append(engine)
        return engine

    yield make
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
