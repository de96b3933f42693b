"""Sliding-window page freeing through the engine, on the tiny model given an 8-token window.

The reference is the same windowed model with freeing switched off (every page kept to the end): the
attention mask is the same, so freeing must change no token, greedy or seeded.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxserve.engine.async_engine import AsyncEngine
from jaxserve.engine.block_pool import FREED_PAGE, chain_block_hashes
from jaxserve.engine.buckets import BucketConfig
from jaxserve.engine.core import RunnerCall
from jaxserve.engine.kv_window import max_pages_held
from jaxserve.engine.runner import ModelRunner
from jaxserve.engine.sequence import Sequence
from jaxserve.modeling.attention import paged_attention
from jaxserve.modeling.decoder import Decoder
from jaxserve.modeling.loader import load_model
from jaxserve.sampling.params import SamplingParams
from tests.engine.conftest import EngineFactory, collect, engine_factory, pool_back_to_full, prompt_ids, run

WINDOW = 8
PAGE = 4
CHUNK = 8
NUM_PAGES = 16  # one whole 64-token context: what the no-freeing reference needs
GREEDY = SamplingParams(temperature=0.0, max_tokens=40, ignore_eos=True)
SEEDED = SamplingParams(temperature=1.0, seed=11, max_tokens=40, ignore_eos=True)


@pytest.fixture(scope="module")
def windowed_runner(tiny_model_dir: Path) -> ModelRunner:
    """The tiny model's weights behind a decoder whose every layer attends through an 8-token window.
    Three step shapes: decode batches of 1 and 2, and 8-token prefill chunks, all over 16 pages."""
    base = load_model(tiny_model_dir, "float32")
    config = dataclasses.replace(base.config, sliding_window=WINDOW)
    graphdef, _ = nnx.split(
        nnx.eval_shape(lambda: Decoder(config, dtype=base.dtype, feature_major=base.feature_major))
    )
    model = dataclasses.replace(base, config=config, graphdef=graphdef)
    buckets = BucketConfig(
        max_num_seqs=2,
        max_model_len=64,
        page_size=PAGE,
        prefill_chunk_sizes=(CHUNK,),
        max_num_batched_tokens=CHUNK,
        min_kv_len=64,
    )
    runner = ModelRunner(model, buckets, NUM_PAGES)
    runner.warm_up()
    return runner


@pytest.fixture
def make_windowed(windowed_runner: ModelRunner, tiny_model_dir: Path) -> Iterator[EngineFactory]:
    """Engines over the windowed runner (AsyncEngine keyword options), shut down after the test."""
    with engine_factory(windowed_runner, tiny_model_dir) as make:
        yield make


class PageLog:
    """Installed as the engine's fault injector (it raises nothing): before every runner call, the pages
    each sequence of the call holds, and the pool's usage."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.calls: list[tuple[RunnerCall, str, frozenset[int]]] = []  # (kind, request, pages held)
        self.usage: list[float] = []
        engine.core.fault_injector = self

    def __call__(self, kind: RunnerCall, seqs: list[Sequence]) -> None:
        for seq in seqs:
            held = frozenset(page for page in seq.block_table if page != FREED_PAGE)
            self.calls.append((kind, seq.request_id.rsplit("-", 1)[0], held))
        self.usage.append(self.engine.core.kv_cache_usage)

    def most_held(self, kind: RunnerCall) -> int:
        return max(len(pages) for call, _, pages in self.calls if call == kind)


def _solo(engine: AsyncEngine, prompt: list[int], params: SamplingParams, rid: str) -> tuple[int, ...]:
    return run(collect(engine, prompt, params, rid)).token_ids


def test_freed_entries_are_masked_whatever_page_they_read() -> None:
    """The mask proof: a block below the window of every query may point at any page (here one full of
    huge values) without changing the attention output; the same swap inside the window does change it."""
    rng = np.random.default_rng(0)
    keys = rng.standard_normal((6, PAGE, 1, 8)).astype(np.float32)
    values = rng.standard_normal((6, PAGE, 1, 8)).astype(np.float32)
    keys[5], values[5] = 1e4, 1e4  # page 5: what another sequence might have written
    cache = (jnp.asarray(keys), jnp.asarray(values))
    q = jnp.asarray(rng.standard_normal((1, 2, 1, 1, 8)).astype(np.float32))
    positions = jnp.asarray([[12, 13]], jnp.int32)  # the oldest key they see is 12 - 8 + 1 = 5: block 1

    def attend(table: list[int]) -> np.ndarray:
        return np.asarray(paged_attention(q, cache, jnp.asarray([table], jnp.int32), positions, WINDOW))

    reference = attend([1, 2, 3, 4])
    np.testing.assert_array_equal(attend([5, 2, 3, 4]), reference)  # block 0: positions 0-3, all masked
    assert not np.allclose(attend([1, 5, 3, 4]), reference)  # block 1 holds position 5, which is seen
    assert jax.numpy.isfinite(attend([5, 2, 3, 4])).all()


def test_freeing_pages_leaves_greedy_and_seeded_tokens_unchanged(make_windowed: EngineFactory) -> None:
    keep = make_windowed(free_pages_outside_window=False)
    free = make_windowed()
    for params, name in ((GREEDY, "greedy"), (SEEDED, "seeded")):
        prompt = prompt_ids(20, 3)
        assert _solo(free, prompt, params, name) == _solo(keep, prompt, params, name)


def test_a_long_generation_holds_a_bounded_number_of_pages(make_windowed: EngineFactory) -> None:
    """20 prompt + 40 generated tokens span 15 pages; with freeing a sequence holds at most
    max_pages_held(8, 4, 8) = 5 pages for an 8-token chunk and max_pages_held(8, 4, 1) = 3 to decode."""
    prompt = prompt_ids(20, 4)
    measured = {}
    for free in (False, True):
        engine = make_windowed(free_pages_outside_window=free)
        log = PageLog(engine)
        _solo(engine, prompt, GREEDY, "long")
        measured[free] = (log.most_held("prefill"), log.most_held("decode"), max(log.usage))
        assert run(pool_back_to_full(engine))
        assert engine.core.kv_cache_usage == 0.0
    assert measured[False] == (5, 15, 15 / NUM_PAGES)
    prefill, decode, usage = measured[True]
    assert prefill <= max_pages_held(WINDOW, PAGE, CHUNK) == 5
    assert decode <= max_pages_held(WINDOW, PAGE, 1) == 3
    assert usage <= 5 / NUM_PAGES  # vllm:kv_cache_usage_perc reads the same pool


def test_a_freed_page_reused_by_a_concurrent_sequence_does_not_change_its_tokens(
    make_windowed: EngineFactory,
) -> None:
    cases = {"a": (prompt_ids(20, 5), GREEDY), "b": (prompt_ids(20, 6), SEEDED)}
    reference = make_windowed(free_pages_outside_window=False)
    alone = {rid: _solo(reference, prompt, params, rid) for rid, (prompt, params) in cases.items()}
    tight = make_windowed(num_pages=8, enable_prefix_caching=False)  # two whole sequences need 30
    log = PageLog(tight)

    async def together() -> dict[str, tuple[int, ...]]:
        outs = await asyncio.gather(*(collect(tight, p, s, rid) for rid, (p, s) in cases.items()))
        return {rid: out.token_ids for rid, out in zip(cases, outs, strict=True)}

    assert run(together()) == alone
    # Some page one sequence gave back was later held by the other while the first was still running.
    reused = False
    for i, (_, first, pages) in enumerate(log.calls):
        for j in range(i + 1, len(log.calls)):
            _, second, later = log.calls[j]
            still_running = any(rid == first for _, rid, _ in log.calls[j + 1 :])
            reused |= second != first and bool(pages & later) and still_running
    assert reused
    assert run(pool_back_to_full(tight))


def test_a_preempted_windowed_sequence_recomputes_the_same_tokens(make_windowed: EngineFactory) -> None:
    cases = [(prompt_ids(20, 7), GREEDY), (prompt_ids(24, 8), SEEDED), (prompt_ids(16, 9), GREEDY)]
    reference = make_windowed(free_pages_outside_window=False)
    alone = [_solo(reference, p, s, f"alone-{i}") for i, (p, s) in enumerate(cases)]
    tight = make_windowed(num_pages=5, enable_prefix_caching=False)  # the least one windowed sequence needs

    async def together() -> list[tuple[int, ...]]:
        outs = await asyncio.gather(*(collect(tight, p, s, f"tight-{i}") for i, (p, s) in enumerate(cases)))
        return [out.token_ids for out in outs]

    assert run(together()) == alone
    assert tight.core.num_preemptions > 0
    assert run(pool_back_to_full(tight))


def test_a_prefix_hit_after_the_prompt_head_was_evicted_gives_identical_tokens(
    make_windowed: EngineFactory,
) -> None:
    """A's oldest blocks are freed first, so they are evicted first; its second run still skips the
    whole prompt but its last block, reading only the two cached blocks inside the window."""
    engine = make_windowed()
    prompt = prompt_ids(40, 10)
    first = run(collect(engine, prompt, SamplingParams(temperature=0.0, max_tokens=12, ignore_eos=True), "a"))
    churn = SamplingParams(temperature=0.0, max_tokens=10, ignore_eos=True)
    run(collect(engine, prompt_ids(20, 11), churn, "churn"))  # takes 8 pages: the 3 unused, then A's oldest
    pool = engine.core.scheduler.pool
    hashes = chain_block_hashes(prompt, PAGE, None, [])
    assert pool.cached_page(hashes[0]) is None and pool.cached_page(hashes[8]) is not None
    again = run(
        collect(engine, prompt, SamplingParams(temperature=0.0, max_tokens=12, ignore_eos=True), "a2")
    )
    assert again.num_cached_tokens == 36  # 9 blocks skipped of the 40-token prompt
    assert again.token_ids == first.token_ids
