"""The load generator starts measuring only once a warm server has loaded every step shape.

A real application over a real engine and runner (tiny random-weight model), warm-started from a filled
executable store; the background loads are held at a gate, so the test sees them in flight."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import aiohttp
from aiohttp.test_utils import TestServer

from jaxserve.bench.load_generator import LoadConfig, step_shapes_loading, wait_for_step_loads
from jaxserve.engine.async_engine import AsyncEngine
from jaxserve.engine.buckets import BucketConfig
from jaxserve.engine.runner import ModelRunner
from jaxserve.http.app import build_app
from jaxserve.modeling.loader import load_model
from jaxserve.modeling.tokenizer import Tokenizer

BUCKETS = BucketConfig(
    max_num_seqs=1, max_model_len=128, prefill_chunk_sizes=(8,), max_num_batched_tokens=8, min_kv_len=64
)
NUM_PAGES = 8
IN_BACKGROUND = 2  # the decode and prefill shapes over 8 pages; warm-up loads the 4-page ones itself


def test_the_wait_lasts_while_the_gauge_counts_background_loads(tiny_model_dir: Path, tmp_path: Path) -> None:
    model = load_model(tiny_model_dir, "float32")
    ModelRunner(model, BUCKETS, NUM_PAGES, executable_dir=tmp_path).warm_up()  # fills the store
    runner = ModelRunner(model, BUCKETS, NUM_PAGES, executable_dir=tmp_path)
    gate = threading.Event()
    load = runner._store.load  # type: ignore[union-attr]

    def gated_load(shape: tuple[int, ...]) -> object:
        if threading.current_thread().name.startswith("step-loader"):
            gate.wait(timeout=120)
        return load(shape)

    runner._store.load = gated_load  # type: ignore[union-attr,method-assign]
    runner.warm_up()
    engine = AsyncEngine(runner, Tokenizer.from_path(tiny_model_dir))
    engine.start()

    async def scenario() -> tuple[int, bool, int]:
        async with TestServer(build_app(engine, served_model_names=["tiny"])) as server:
            config = LoadConfig(base_url=str(server.make_url("")).rstrip("/"), timeout_s=120)
            async with aiohttp.ClientSession() as session:
                before = await step_shapes_loading(session, config)
                waiting = asyncio.ensure_future(wait_for_step_loads(session, config))
                await asyncio.sleep(1.0)
                held = not waiting.done()
                gate.set()
                await asyncio.wait_for(waiting, timeout=120)
                return before, held, await step_shapes_loading(session, config)

    try:
        before, held, after = asyncio.run(scenario())
    finally:
        gate.set()
        engine.shutdown()
    assert before == IN_BACKGROUND
    assert held  # still waiting while the loads are held
    assert after == 0 and runner.num_shapes_loading == 0
    assert (runner.compile_count, runner.loaded_count) == (0, len(BUCKETS.all_step_shapes()))


def test_a_server_without_the_gauge_is_not_waited_for() -> None:
    """Another server (llama-server, or jaxserve without an engine runner) exports no such gauge."""

    async def scenario() -> int:
        app = build_app(object(), served_model_names=["tiny"])  # type: ignore[arg-type]
        async with TestServer(app) as server:
            config = LoadConfig(base_url=str(server.make_url("")).rstrip("/"), timeout_s=5)
            async with aiohttp.ClientSession() as session:
                await asyncio.wait_for(wait_for_step_loads(session, config), timeout=5)
                return await step_shapes_loading(session, config)

    assert asyncio.run(scenario()) == 0
