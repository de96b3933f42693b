"""The model runner: packs scheduled work into bucketed device arrays and calls one jitted step.

Each (batch, tokens, pages) shape is compiled ahead of time once and kept, so the runner knows
exactly how many compilations happened and can refuse none after warm-up.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import numpy as np
from jax.sharding import NamedSharding

from jaxserve.engine.block_pool import FREED_PAGE
from jaxserve.engine.buckets import BucketConfig
from jaxserve.engine.compiler_options import step_compiler_options
from jaxserve.engine.executable_store import ExecutableStore, fingerprint
from jaxserve.engine.multihost import Call, LeaderChannel, follow, host_copy, is_leader
from jaxserve.engine.step import PromptLogprobs, StepInputs, model_step_on_leaves
from jaxserve.modeling import native_library
from jaxserve.modeling.kv_cache import PagedKVCache
from jaxserve.modeling.loader import LoadedModel
from jaxserve.modeling.sharding import batch_sharding, kv_cache_spec, place, replicated
from jaxserve.sampling.batch import SamplingBatch, host_array
from jaxserve.sampling.bitmask import bitmask_width, full_bitmask
from jaxserve.sampling.params import SamplingParams
from jaxserve.sampling.sampler import SampleResult
from jaxserve.sampling.slot_state import SlotSamplingState, init_slot

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RowInput:
    """One row of a step: the tokens to feed, the position of the first, and how to sample after them.

    `slot` is the sequence's sampler-state row, `block_table` its KV-cache pages (covering every fed
    position). `bitmask` ([W] int32 words) restricts the sampled token (None: any token); `counted` says whether
    the sampled token becomes output (False for a prompt chunk that does not end the prompt).
    `next_ids` (prefill with prompt logprobs only) is the prompt token after each fed token.
    """

    tokens: list[int]
    start_position: int
    params: SamplingParams
    seed: int
    generated: int
    slot: int
    block_table: list[int]
    bitmask: np.ndarray | None = None
    counted: bool = True
    next_ids: list[int] | None = None


@dataclass(frozen=True)
class RowOutput:
    """The sampled token of one row and its raw-model logprob, rank and top alternatives."""

    token: int
    logprob: float
    rank: int
    top_ids: np.ndarray  # [TOP_LOGPROBS] int32
    top_logprobs: np.ndarray  # [TOP_LOGPROBS] float32


@dataclass(frozen=True)
class PromptLogprobRows:
    """Host copy of a prefill chunk's prompt logprobs: entry t scores the prompt token after fed token t."""

    logprob: np.ndarray  # [T]
    rank: np.ndarray  # [T]
    top_ids: np.ndarray  # [T, TOP_LOGPROBS]
    top_logprobs: np.ndarray  # [T, TOP_LOGPROBS]


def _lower_thread_priority() -> None:
    """Run the calling thread at the lowest CPU priority (Linux: niceness is per thread there).

    Background step loads after warm-up take CPU from the steps being served. At nice 19 they yield to
    them; a step waiting for its own shape's load still gets it, the serving threads being idle then.
    Measured (the first three sequential 64-token requests from "ready" on, --max-num-seqs 64): 8.7 /
    14.8 / 24.2 tok/s, against 7.3 / 11.0 / 19.2 at normal priority; ~27 once the loads are done."""
    if sys.platform == "linux":  # elsewhere PRIO_PROCESS would renice the whole server
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
        except OSError:  # a sandbox that forbids it: the loads merely share the CPU as before
            log.debug("could not lower the step loader's priority", exc_info=True)


class ModelRunner:
    """Owns the weights, the paged KV cache, the per-slot sampler state and the compiled step executables."""

    def __init__(
        self,
        model: LoadedModel,
        buckets: BucketConfig,
        num_pages: int,
        *,
        executable_dir: Path | None = None,
    ) -> None:
        """`executable_dir`: where compiled step executables are stored and loaded from on later starts."""
        self.model = model
        self.buckets = buckets
        self.num_pages = num_pages
        self.vocab_size = model.config.vocab_size
        self.mesh = model.mesh
        # One sharding for every layer's key and value pool (a pytree prefix of the cache).
        self._cache_shardings = NamedSharding(self.mesh, kv_cache_spec(model.config, self.mesh))
        # The weights go to each step as a flat list (see model_step_on_leaves), sharded as loaded.
        self._param_leaves, self._params_tree = jax.tree.flatten(model.state)
        self._param_shardings = [weight.sharding for weight in self._param_leaves]
        self._replicated = replicated(self.mesh)
        # How step inputs reach the mesh. In one process the compiled call moves host arrays onto their
        # devices itself (slicing them per device), ~1 ms per step cheaper than placing each one first;
        # across processes each supplies only its own devices' slices.
        self._move_input = _onto if jax.process_count() > 1 else _device_arrays_onto
        # Allocated straight into their shards; the sampler state is small and every device reads it whole.
        self.cache = jax.jit(
            lambda: PagedKVCache.allocate(model.config, num_pages, buckets.page_size, model.dtype),
            out_shardings=self._cache_shardings,
        )()
        self.sampler_state = jax.jit(
            lambda: SlotSamplingState.allocate(buckets.max_num_seqs, self.vocab_size),
            out_shardings=self._replicated,
        )()
        self.full_bitmask = full_bitmask(self.vocab_size)
        self._init_slot = jax.jit(
            init_slot, donate_argnums=(0,), in_shardings=self._replicated, out_shardings=self._replicated
        )
        # Step executables loaded from the store may call the native kernels, so they are built and
        # registered before any is loaded; which build it is goes into the store's key.
        self._native_kernel = (
            native_library.library_path()
            if jax.default_backend() == "cpu" and native_library.available()
            else None
        )
        self._compiled: dict[tuple[int, int, int], Any] = {}
        self._loading: dict[tuple[int, int, int], Future[Any]] = {}  # background loads after warm-up
        self._store = (
            None
            if executable_dir is None
            else ExecutableStore(executable_dir, self._fingerprint(), list(self.mesh.devices.flat))
        )
        # Per step shape: where each step input goes (fixed by the shape, so worked out once, at compile).
        self._input_shardings: dict[tuple[int, int, int], Any] = {}
        self._compile_lock = threading.Lock()
        self.compile_count = 0
        self.loaded_count = 0  # step shapes loaded from the executable store instead of compiled
        self.compile_seconds = 0.0  # summed over compiles, which may overlap
        self.warmup_seconds = 0.0  # wall time of warm_up()
        self.frozen = False  # set after warm-up: a new shape is then a bug to report, not to absorb
        # Across processes, process 0 announces every device call to the others (see engine.multihost).
        self._followers = LeaderChannel() if jax.process_count() > 1 and is_leader() else None

    # Padding tokens sit at a position past any block table's span, so their key/value writes are dropped.
    PAD_POSITION = 1 << 30

    # ---------------------------------------------------------------- compilation

    def _executable(self, key: tuple[int, int, int]) -> Any:
        exe = self._compiled.get(key)
        if exe is None:
            loading = self._loading.get(key)
            exe = loading.result() if loading is not None else self._compile(key)
        return exe

    def _fingerprint(self) -> str:
        """What the compiled steps depend on besides their shape (the executable store's key)."""
        model = self.model
        return fingerprint(
            [
                model.config,
                str(model.dtype),
                model.quantization,
                repr(model.graphdef),
                model.state,
                self.cache,
                self.sampler_state,
                self.buckets,
                self.num_pages,
                None if self._native_kernel is None else self._native_kernel.name,
            ]
        )

    def _compile(self, key: tuple[int, int, int]) -> Any:
        """Load one (batch, tokens, pages) step shape from the executable store, or lower and compile it
        (counted) and store it."""
        batch, tokens, pages = key
        start = time.perf_counter()
        inputs = self._pack([], key)
        input_shardings = jax.tree.map(lambda leaf: batch_sharding(self.mesh, leaf), inputs)
        exe = None if self._store is None else self._store.load(key)
        if exe is not None:
            with self._compile_lock:
                self.loaded_count += 1
                self._input_shardings[key] = input_shardings
                self._compiled[key] = exe
            log.info("loaded step batch=%d tokens=%d pages=%d", batch, tokens, pages)
            return exe
        if self.frozen:
            log.warning("compiling step shape %s after warm-up", key)
        # Explicit shardings: weights and cache as placed; batch rows over `data`; sampled results
        # replicated, so any process can read them.
        jitted = jax.jit(
            model_step_on_leaves,
            static_argnums=(0, 1),
            donate_argnums=(3, 4),
            in_shardings=(
                self._param_shardings,
                self._cache_shardings,
                self._replicated,
                input_shardings,
            ),
            out_shardings=(self._replicated, self._replicated, self._cache_shardings, self._replicated),
        )
        with jax.set_mesh(self.mesh):  # the mesh model code may ask for (the Pallas kernel's shard_map)
            lowered = jitted.lower(
                self.model.graphdef,
                self._params_tree,
                self._param_leaves,
                self.cache,
                self.sampler_state,
                jax.tree.map(place, inputs, input_shardings),
            )
        exe = lowered.compile(step_compiler_options(self.model, key))
        if self._store is not None:
            self._store.save(key, exe)
        elapsed = time.perf_counter() - start
        with self._compile_lock:
            self.compile_count += 1
            self._input_shardings[key] = input_shardings
            self.compile_seconds += elapsed
            self._compiled[key] = exe
        log.info("compiled step batch=%d tokens=%d pages=%d in %.1fs", batch, tokens, pages, elapsed)
        return exe

    def warm_up(self) -> None:
        """Compile (or load) every bucketed shape, and the slot initialiser, so serving never compiles.

        When every shape is in the executable store, only those a few short conversations need
        (`BucketConfig.loaded_up_front`) load before this returns; the rest load on background threads
        while the server runs, and a step that needs one of them first waits for its load, never compiles.
        """
        start = time.perf_counter()
        # Every process runs this first call itself (no announcement): followers warm up too.
        self._run_init_slot(self._slot_rows(0, SamplingParams(), [0], []))
        shapes = [s for s in self.buckets.all_step_shapes() if s not in self._compiled]
        later: list[tuple[int, int, int]] = []
        if self._store is not None and all(self._store.has(shape) for shape in shapes):
            later = [s for s in shapes if not self.buckets.loaded_up_front(s)]
            shapes = [s for s in shapes if s not in later]
        # XLA compiles (and loads) with the GIL released: a thread per core cut a cold warm-up by ~27% on
        # 2 cores.
        workers = os.cpu_count() or 1
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for index, _ in enumerate(pool.map(self._compile, shapes)):
                log.info("warm-up %d/%d", index + 1, len(shapes))
        # An executable's first call is slow: it packs the weights for the dot library (YNNPACK) and sets up
        # its kernels. Default model on a 2-core CPU, first / second call: a 4 x 128-token prompt step 1940
        # / 908 ms float32 and 970 / 337 ms W8A8, a batch-4 decode step 241 / 43 and 252 / 21 ms (`/tmp`
        # timing). One call of each shape with padding rows only, which write nothing to the KV cache or
        # the sampler state, takes that out of the first requests of each shape. (Shapes loaded in the
        # background are left to their first request: their call would race the engine's steps.)
        for shape in shapes:
            result, _ = self._run_step(shape, self._pack([], shape))
            result.tokens.block_until_ready()
        if later:
            loader = ThreadPoolExecutor(
                max_workers=workers, thread_name_prefix="step-loader", initializer=_lower_thread_priority
            )
            self._loading = {shape: loader.submit(self._compile, shape) for shape in later}
            loader.shutdown(wait=False)  # queued loads still run; nothing waits for them here
        self.frozen = True
        self.warmup_seconds = time.perf_counter() - start
        log.info(
            "warm-up: %d step shapes compiled, %d loaded, in %.1fs (%d more loading in the background)",
            self.compile_count,
            self.loaded_count,
            self.warmup_seconds,
            len(later),
        )

    @property
    def num_shapes_loading(self) -> int:
        """Step shapes warm-up left to load in the background that are not in place yet."""
        return sum(not pending.done() for pending in self._loading.values())

    def wait_until_loaded(self) -> None:
        """Block until the shapes warm-up left to background loading are all in place."""
        for pending in list(self._loading.values()):
            pending.result()

    # ---------------------------------------------------------------- host packing

    def _pack(
        self, rows: list[RowInput], shape: tuple[int, int, int], *, want_prompt_logprobs: bool = False
    ) -> StepInputs:
        """Pad `rows` into one step's arrays of `shape`; padding rows feed nothing that lands in the cache."""
        batch, tokens, pages = shape
        token_ids = np.zeros((batch, tokens), np.int32)
        positions = np.full((batch, tokens), self.PAD_POSITION, np.int32)
        next_ids = np.zeros((batch, tokens), np.int32)
        block_tables = np.zeros((batch, pages), np.int32)
        slots = np.full((batch,), self.buckets.max_num_seqs, np.int32)  # out of range: padding
        last_index = np.zeros((batch,), np.int32)
        counted = np.zeros((batch,), np.bool_)
        bitmask = np.broadcast_to(self.full_bitmask, (batch, bitmask_width(self.vocab_size))).copy()
        for i, row in enumerate(rows):
            if row.bitmask is not None:
                bitmask[i] = row.bitmask
            n = len(row.tokens)
            token_ids[i, :n] = row.tokens
            positions[i, :n] = np.arange(row.start_position, row.start_position + n)
            if row.next_ids is not None:
                next_ids[i, : len(row.next_ids)] = row.next_ids
            table = np.asarray(row.block_table[:pages], np.int32)  # the bucket spans every position fed
            # A freed entry (sliding window) reads page 0, like padding: every position it stands for is
            # outside the window of every query in this row, so the mask hides whatever page 0 holds.
            block_tables[i, : len(table)] = np.where(table == FREED_PAGE, 0, table)
            slots[i] = row.slot
            last_index[i] = n - 1
            counted[i] = row.counted
        padding: list[SamplingParams | None] = [None] * (batch - len(rows))
        sampling = SamplingBatch.from_params(
            [r.params for r in rows] + padding,
            [r.seed for r in rows] + [0] * len(padding),
            [r.generated for r in rows] + [0] * len(padding),
            [r.bitmask is not None for r in rows] + [False] * len(padding),
        )
        return StepInputs(
            tokens=host_array(token_ids),
            previous_tokens=host_array(np.zeros((batch,), np.int32)),
            feed_previous=host_array(np.zeros((batch,), np.bool_)),
            positions=host_array(positions),
            next_ids=host_array(next_ids),
            block_tables=host_array(block_tables),
            slots=host_array(slots),
            last_index=host_array(last_index),
            counted=host_array(counted),
            bitmask=host_array(bitmask),
            want_prompt_logprobs=host_array(np.asarray(want_prompt_logprobs)),
            sampling=sampling,
        )

    def _run(
        self, rows: list[RowInput], shape: tuple[int, int, int], want_prompt_logprobs: bool
    ) -> tuple[SampleResult, PromptLogprobs]:
        packed = self._pack(rows, shape, want_prompt_logprobs=want_prompt_logprobs)
        if self._followers is not None:
            self._followers.announce(Call.STEP, *shape, int(want_prompt_logprobs), payload=packed)
        return self._run_step(shape, packed)

    def _run_step(
        self, shape: tuple[int, int, int], packed: StepInputs
    ) -> tuple[SampleResult, PromptLogprobs]:
        exe = self._executable(shape)
        inputs = jax.tree.map(self._move_input, packed, self._input_shardings[shape])
        result, prompt_lp, self.cache, self.sampler_state = exe(
            self._param_leaves, self.cache, self.sampler_state, inputs
        )
        return result, prompt_lp

    def follow_leader(self) -> None:
        """On a follower process: make every device call process 0 announces, until it stops."""

        follow(
            self._run_init_slot,
            lambda: self._slot_rows(0, SamplingParams(), [], []),
            lambda shape, payload: self._run_step(shape, jax.tree.map(host_array, payload)),
            lambda shape, want: self._pack([], shape, want_prompt_logprobs=want),
        )

    def release_followers(self) -> None:
        """On process 0 at shutdown: let the follower processes exit."""
        if self._followers is not None:
            self._followers.announce(Call.STOP)
            self._followers = None

    def state_lost(self) -> bool:
        """Whether the KV cache or sampler state was donated to a call that then failed.

        A failure before the executable runs (packing, an injected fault) leaves both intact; one after
        XLA took the donated buffers leaves them deleted, and no step can run on them again.
        """
        leaves = jax.tree.leaves((self.cache, self.sampler_state))
        return any(isinstance(leaf, jax.Array) and leaf.is_deleted() for leaf in leaves)

    @staticmethod
    def _row_outputs(result: SampleResult, count: int) -> list[RowOutput]:
        tokens, logprob, rank = host_copy(result.tokens), host_copy(result.logprob), host_copy(result.rank)
        top_ids, top_lp = host_copy(result.top_ids), host_copy(result.top_logprobs)
        return [
            RowOutput(int(tokens[i]), float(logprob[i]), int(rank[i]), top_ids[i], top_lp[i])
            for i in range(count)
        ]

    # ---------------------------------------------------------------- the engine's calls

    def start_sequence(
        self, slot: int, params: SamplingParams, prompt_ids: list[int], output_ids: list[int]
    ) -> None:
        """A sequence takes `slot`: load its logit bias, prompt-token set and output counts so far."""
        rows = self._slot_rows(slot, params, prompt_ids, output_ids)
        if self._followers is not None:
            self._followers.announce(Call.INIT_SLOT, payload=rows)
        self._run_init_slot(rows)

    def _slot_rows(
        self, slot: int, params: SamplingParams, prompt_ids: list[int], output_ids: list[int]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The host arrays `start_sequence` loads: slot, bias [V], prompt mask [V], output counts [V]."""
        bias = np.zeros((self.vocab_size,), np.float32)
        for token_id, value in params.logit_bias.items():
            bias[token_id] = value
        prompt_mask = np.zeros((self.vocab_size,), np.bool_)
        prompt_mask[np.asarray(prompt_ids, np.int64)] = True
        counts = np.bincount(np.asarray(output_ids, np.int64), minlength=self.vocab_size).astype(np.int32)
        return np.asarray(slot, np.int32), bias, prompt_mask, counts

    def _run_init_slot(self, rows: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]) -> None:
        slot, bias, prompt_mask, counts = (place(row, self._replicated) for row in rows)
        self.sampler_state = self._init_slot(self.sampler_state, slot, bias, prompt_mask, counts)

    def prefill_chunk(self, row: RowInput) -> tuple[RowOutput, PromptLogprobRows | None]:
        """Feed one chunk of a sequence's tokens into the cache (see `prefill_chunks`)."""
        return self.prefill_chunks([row])[0]

    def prefill_chunks(self, rows: list[RowInput]) -> list[tuple[RowOutput, PromptLogprobRows | None]]:
        """Feed one chunk of each row's sequence into the cache, all in one step (rows of one chunk size
        fill it best: each is padded to the longest).

        A row's sampled token matters only when its chunk ends the prompt (row.counted). Prompt logprobs
        come back for the rows that give row.next_ids.
        """
        longest = max(len(row.tokens) for row in rows)
        reach = max(row.start_position + len(row.tokens) for row in rows)
        shape = self.buckets.step_shape(len(rows), longest, reach)
        want = any(row.next_ids is not None for row in rows)
        result, prompt_lp = self._run(rows, shape, want)
        prompt_host = None
        if want:
            prompt_host = PromptLogprobRows(
                logprob=host_copy(prompt_lp.logprob),
                rank=host_copy(prompt_lp.rank),
                top_ids=host_copy(prompt_lp.top_ids),
                top_logprobs=host_copy(prompt_lp.top_logprobs),
            )
        outputs = []
        for i, (row, sampled) in enumerate(zip(rows, self._row_outputs(result, len(rows)), strict=True)):
            prompt_rows = None
            if prompt_host is not None and row.next_ids is not None:
                n = len(row.tokens)
                prompt_rows = PromptLogprobRows(
                    logprob=prompt_host.logprob[i, :n],
                    rank=prompt_host.rank[i, :n],
                    top_ids=prompt_host.top_ids[i, :n],
                    top_logprobs=prompt_host.top_logprobs[i, :n],
                )
            outputs.append((sampled, prompt_rows))
        return outputs

    def decode(self, rows: list[RowInput]) -> list[RowOutput]:
        """One token for each row (one fed token per row)."""
        return self.collect(self.dispatch_decode(rows))

    @property
    def can_feed_from_device(self) -> bool:
        """Whether a decode step may take its tokens from the previous step's output on the device.
        Not across processes: followers replay each step from the host arrays process 0 announces."""
        return jax.process_count() == 1

    def dispatch_decode(self, rows: list[RowInput], after: PendingDecode | None = None) -> PendingDecode:
        """Start a decode step (one fed token per row) without waiting for it; `collect` reads its tokens.

        With `after`, the rows are the same sequences in the same order as `after`'s, and each feeds the
        token `after` samples for it (its `tokens` entry is ignored): the step queues behind `after` on
        the device, so the host can dispatch it before `after`'s tokens are known."""
        reach = max(r.start_position for r in rows) + 1
        shape = self.buckets.step_shape(len(rows), 1, reach)
        if after is None:
            result, _ = self._run(rows, shape, False)
            return PendingDecode(result, len(rows))
        if not self.can_feed_from_device or after.count != len(rows) or after.batch != shape[0]:
            raise ValueError("a chained decode step needs the previous step's rows, on one process")
        packed = self._pack(rows, shape)
        feed = np.zeros((shape[0],), np.bool_)
        feed[: len(rows)] = True
        packed = dataclasses.replace(
            packed, previous_tokens=after.result.tokens, feed_previous=host_array(feed)
        )
        result, _ = self._run_step(shape, packed)
        return PendingDecode(result, len(rows))

    def collect(self, pending: PendingDecode) -> list[RowOutput]:
        """The sampled tokens of a dispatched decode step (waits for it to finish)."""
        return self._row_outputs(pending.result, pending.count)


@dataclass(frozen=True)
class PendingDecode:
    """A decode step dispatched to the device whose results have not been read yet."""

    result: SampleResult  # device arrays, [batch bucket] rows
    count: int  # the real rows, first in the batch

    @property
    def batch(self) -> int:
        return int(self.result.tokens.shape[0])


def _onto(leaf: Any, sharding: NamedSharding) -> jax.Array:
    """A step input onto the mesh: a host array sliced per device, a device array (a previous step's
    output) resharded there without a round trip through the host."""
    if isinstance(leaf, jax.Array):
        return _device_arrays_onto(leaf, sharding)
    return place(leaf, sharding)


def _device_arrays_onto(leaf: Any, sharding: NamedSharding) -> Any:
    """A device array resharded onto the mesh without a round trip through the host; a host array as is."""
    if not isinstance(leaf, jax.Array):
        return leaf
    # Equivalent, not equal: a replicated output (P()) feeding a batch input (P(None,)) on a mesh without
    # a data split needs no copy.
    return leaf if leaf.sharding.is_equivalent_to(sharding, leaf.ndim) else jax.device_put(leaf, sharding)
