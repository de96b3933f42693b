"""Compiled steps stored on disk: a second runner of the same model loads them instead of compiling."""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

import jax
import pytest

from jaxserve.engine.buckets import BucketConfig
from jaxserve.engine.executable_store import ExecutableStore
from jaxserve.engine.runner import ModelRunner, RowInput
from jaxserve.modeling.loader import LoadedModel, load_model
from jaxserve.modeling.sharding import ParallelConfig
from jaxserve.sampling.params import SamplingParams

BUCKETS = BucketConfig(
    max_num_seqs=1,
    max_model_len=128,
    page_size=16,
    prefill_chunk_sizes=(8,),
    max_num_batched_tokens=8,
    min_kv_len=64,
)
SHAPES = BUCKETS.all_step_shapes()  # decode and 8-token prefill, each over 4 and over 8 pages
NARROW = [(1, 1, 4), (1, 8, 4)]  # what a warm start loads before it returns
NUM_PAGES = 8
GREEDY = SamplingParams(temperature=0.0)


@pytest.fixture(scope="module")
def model(tiny_model_dir: Path) -> LoadedModel:
    return load_model(tiny_model_dir, "float32")


def greedy_tokens(runner: ModelRunner, count: int, *, start: int = 0) -> list[int]:
    """Feed an 8-token prompt to slot 0 at position `start`, then decode `count` tokens greedily."""
    table = list(range(BUCKETS.max_pages_per_seq))
    prompt = [5, 9, 2, 7, 11, 3, 8, 6]
    runner.start_sequence(0, GREEDY, prompt, [])
    out = runner.prefill_chunk(RowInput(prompt, start, GREEDY, 0, 0, 0, table))[0]
    tokens = [out.token]
    for index in range(count - 1):
        row = RowInput([tokens[-1]], start + len(prompt) + index, GREEDY, 0, index + 1, 0, table)
        tokens.append(runner.decode([row])[0].token)
    return tokens


def compiled_then_loaded(model: LoadedModel, store_dir: Path) -> tuple[ModelRunner, ModelRunner]:
    """A runner that warms up on an empty store in `store_dir`, then a second one on the store the first
    filled, its background loads finished."""
    first = ModelRunner(model, BUCKETS, NUM_PAGES, executable_dir=store_dir)
    first.warm_up()
    second = ModelRunner(model, BUCKETS, NUM_PAGES, executable_dir=store_dir)
    second.warm_up()
    second.wait_until_loaded()
    return first, second


def test_a_second_runner_loads_every_step_and_generates_the_same_tokens(
    model: LoadedModel, tmp_path: Path
) -> None:
    first, second = compiled_then_loaded(model, tmp_path)
    assert (first.compile_count, first.loaded_count) == (len(SHAPES), 0)
    assert len(list(tmp_path.glob("*.xla"))) == len(SHAPES)
    assert (second.compile_count, second.loaded_count) == (0, len(SHAPES))
    assert greedy_tokens(second, 6) == greedy_tokens(first, 6)


def test_a_warm_start_returns_after_the_narrow_shapes_and_loads_the_rest_while_serving(
    model: LoadedModel, tmp_path: Path
) -> None:
    first = ModelRunner(model, BUCKETS, NUM_PAGES, executable_dir=tmp_path)
    first.warm_up()
    second = ModelRunner(model, BUCKETS, NUM_PAGES, executable_dir=tmp_path)
    second.warm_up()
    assert second.compile_count == 0
    assert set(NARROW) <= set(second._compiled)
    assert set(second._loading) == set(SHAPES) - set(NARROW)  # left to the background
    # Positions 64..80 need the 8-page shapes: the steps wait for their loads and compile nothing.
    assert greedy_tokens(second, 8, start=64) == greedy_tokens(first, 8, start=64)
    second.wait_until_loaded()
    assert (second.compile_count, second.loaded_count) == (0, len(SHAPES))
    assert second.num_shapes_loading == 0 and first.num_shapes_loading == 0


@pytest.mark.skipif(sys.platform != "linux", reason="per-thread niceness is Linux's")
def test_background_loads_run_at_the_lowest_cpu_priority(model: LoadedModel, tmp_path: Path) -> None:
    ModelRunner(model, BUCKETS, NUM_PAGES, executable_dir=tmp_path).warm_up()
    runner = ModelRunner(model, BUCKETS, NUM_PAGES, executable_dir=tmp_path)
    seen: list[int] = []
    load = runner._store.load  # type: ignore[union-attr]

    def load_noting_priority(shape: tuple[int, ...]) -> object:
        seen.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
        return load(shape)

    runner._store.load = load_noting_priority  # type: ignore[union-attr,method-assign]
    runner.warm_up()
    runner.wait_until_loaded()
    in_warm_up = len(NARROW)  # loaded on warm-up's own threads, at the server's priority
    assert len(seen) == len(SHAPES)
    assert sorted(seen) == [os.getpriority(os.PRIO_PROCESS, 0)] * in_warm_up + [19] * (
        len(SHAPES) - in_warm_up
    )


def test_a_different_pool_size_is_a_different_program(model: LoadedModel, tmp_path: Path) -> None:
    ModelRunner(model, BUCKETS, NUM_PAGES, executable_dir=tmp_path).warm_up()
    other = ModelRunner(model, BUCKETS, NUM_PAGES + 1, executable_dir=tmp_path)
    other.warm_up()
    other.wait_until_loaded()
    assert (other.compile_count, other.loaded_count) == (len(SHAPES), 0)
    assert len(list(tmp_path.glob("*.xla"))) == 2 * len(SHAPES)


def test_an_unreadable_entry_is_discarded_and_compiled_again(model: LoadedModel, tmp_path: Path) -> None:
    ModelRunner(model, BUCKETS, NUM_PAGES, executable_dir=tmp_path).warm_up()
    broken = sorted(tmp_path.glob("*.xla"))[0]
    broken.write_bytes(b"not an executable")
    runner = ModelRunner(model, BUCKETS, NUM_PAGES, executable_dir=tmp_path)
    runner.warm_up()
    runner.wait_until_loaded()
    assert (runner.compile_count, runner.loaded_count) == (1, len(SHAPES) - 1)
    assert broken.read_bytes() != b"not an executable"  # replaced by the new compile
    assert greedy_tokens(runner, 3) == greedy_tokens(ModelRunner(model, BUCKETS, NUM_PAGES), 3)


def test_a_sharded_runner_loads_its_steps_onto_the_same_devices(tiny_model_dir: Path, tmp_path: Path) -> None:
    mesh = ParallelConfig(2, 1).build_mesh()
    model = load_model(tiny_model_dir, "float32", mesh=mesh)
    first, second = compiled_then_loaded(model, tmp_path)
    assert (second.compile_count, second.loaded_count) == (0, len(SHAPES))
    assert greedy_tokens(second, 4) == greedy_tokens(first, 4)


def test_nothing_is_stored_while_jax_s_own_cache_may_have_served_the_compile(
    model: LoadedModel, tmp_path: Path
) -> None:
    """An executable JAX's persistent cache returned is a deserialized one, which XLA:CPU cannot serialize
    whole again (tests/e2e/test_restart.py): with that cache enabled, the store keeps out of the way."""
    runner = ModelRunner(model, BUCKETS, NUM_PAGES)
    runner.warm_up()
    store = ExecutableStore(tmp_path, "key", list(runner.mesh.devices.flat))
    previous = jax.config.jax_compilation_cache_dir
    jax.config.update("jax_compilation_cache_dir", str(tmp_path / "jax-cache"))
    try:  # no compile happens in here, so JAX's cache never starts for the rest of the test process
        store.save(NARROW[0], runner._compiled[NARROW[0]])
    finally:
        jax.config.update("jax_compilation_cache_dir", previous)
    assert not store.has(NARROW[0])
    store.save(NARROW[0], runner._compiled[NARROW[0]])
    assert store.has(NARROW[0])


def test_warm_up_runs_each_shape_once_without_touching_the_cache_or_the_sampler_state(
    model: LoadedModel,
) -> None:
    runner = ModelRunner(model, BUCKETS, NUM_PAGES)
    greedy_tokens(runner, 3)  # some keys and values to keep
    # Warm-up's first call sets slot 0 as a new sequence's: done here first, so what follows must keep it.
    runner._run_init_slot(runner._slot_rows(0, SamplingParams(), [0], []))
    before = jax.tree.map(lambda leaf: jax.device_get(leaf).copy(), (runner.cache, runner.sampler_state))
    runs: list[tuple[int, int, int]] = []
    real = runner._run_step

    def counting(shape: tuple[int, int, int], packed: object) -> object:
        runs.append(shape)
        return real(shape, packed)  # type: ignore[arg-type]

    runner._run_step = counting  # type: ignore[method-assign]
    runner.warm_up()
    assert sorted(runs) == sorted(s for s in SHAPES if s not in NARROW)  # the two greedy_tokens compiled
    after = jax.tree.map(jax.device_get, (runner.cache, runner.sampler_state))
    for old, new in zip(jax.tree.leaves(before), jax.tree.leaves(after), strict=True):
        assert (old == new).all()
