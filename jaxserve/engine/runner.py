"""The model runner: packs scheduled work into bucketed device arrays and calls one jitted step.

Each (batch, tokens, kv_len) shape is compiled ahead of time once and kept, so the runner knows
exactly how many compilations happened and can refuse none after warm-up.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxserve.engine.buckets import BucketConfig, bucket_for
from jaxserve.engine.step import PromptLogprobs, SlotSamplingState, StepInputs, init_slot, model_step
from jaxserve.modeling.kv_cache import SlotKVCache
from jaxserve.modeling.loader import LoadedModel
from jaxserve.sampling.batch import SamplingBatch
from jaxserve.sampling.bitmask import bitmask_width, full_bitmask
from jaxserve.sampling.params import SamplingParams
from jaxserve.sampling.sampler import SampleResult

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RowInput:
    """One row of a step: the tokens to feed, the position of the first, and how to sample after them.

    `bitmask` ([W] int32 words) restricts the sampled token (None: any token); `counted` says whether
    the sampled token becomes output (False for a prompt chunk that does not end the prompt).
    `next_ids` (prefill with prompt logprobs only) is the prompt token after each fed token.
    """

    tokens: list[int]
    start_position: int
    params: SamplingParams
    seed: int
    generated: int
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


class ModelRunner:
    """Owns the weights, the KV cache, the per-slot sampler state and the compiled step executables."""

    def __init__(self, model: LoadedModel, buckets: BucketConfig) -> None:
        self.model = model
        self.buckets = buckets
        self.vocab_size = model.config.vocab_size
        self.cache = SlotKVCache.allocate(
            model.config, buckets.max_num_seqs, buckets.max_model_len, model.dtype
        )
        self.sampler_state = SlotSamplingState.allocate(buckets.max_num_seqs, self.vocab_size)
        self.full_bitmask = full_bitmask(self.vocab_size)
        self._jitted = jax.jit(
            model_step, static_argnums=(0,), static_argnames=("kv_len",), donate_argnums=(2, 3)
        )
        self._init_slot = jax.jit(init_slot, donate_argnums=(0,))
        self._compiled: dict[tuple[int, int, int], Any] = {}
        self._compile_lock = threading.Lock()
        self.compile_count = 0
        self.compile_seconds = 0.0  # summed over compiles, which may overlap
        self.warmup_seconds = 0.0  # wall time of warm_up()
        self.frozen = False  # set after warm-up: a new shape is then a bug to report, not to absorb

    @property
    def pad_position(self) -> int:
        """Padding tokens sit at a position past the cache end, so their key/value writes are dropped."""
        return self.buckets.max_model_len

    # ---------------------------------------------------------------- compilation

    def _executable(self, batch: int, tokens: int, kv_len: int) -> Any:
        key = (batch, tokens, kv_len)
        exe = self._compiled.get(key)
        if exe is None:
            exe = self._compile(key)
        return exe

    def _compile(self, key: tuple[int, int, int]) -> Any:
        """Lower and compile one (batch, tokens, kv_len) step shape, counting it."""
        batch, tokens, kv_len = key
        if self.frozen:
            log.warning("compiling step shape %s after warm-up", key)
        start = time.perf_counter()
        exe = self._jitted.lower(
            self.model.graphdef,
            self.model.state,
            self.cache,
            self.sampler_state,
            self._pack([None] * batch, tokens, 0, want_prompt_logprobs=False),
            kv_len=kv_len,
        ).compile()
        elapsed = time.perf_counter() - start
        with self._compile_lock:
            self.compile_count += 1
            self.compile_seconds += elapsed
            self._compiled[key] = exe
        log.info("compiled step batch=%d tokens=%d kv_len=%d in %.1fs", batch, tokens, kv_len, elapsed)
        return exe

    def warm_up(self) -> None:
        """Compile every bucketed shape now (and the slot initialiser), so serving never compiles."""
        start = time.perf_counter()
        self.start_sequence(0, SamplingParams(), [0])
        shapes = [s for s in self.buckets.all_step_shapes() if s not in self._compiled]
        # XLA compiles with the GIL released: a thread per core cut a cold warm-up by ~27% on 2 cores.
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            for index, _ in enumerate(pool.map(self._compile, shapes)):
                log.info("warm-up %d/%d", index + 1, len(shapes))
        self.frozen = True
        self.warmup_seconds = time.perf_counter() - start
        log.info("warm-up compiled %d step shapes in %.1fs", len(shapes), self.warmup_seconds)

    # ---------------------------------------------------------------- host packing

    def _pack(
        self, rows: list[RowInput | None], tokens: int, row_start: int, *, want_prompt_logprobs: bool
    ) -> StepInputs:
        """Pad `rows` into one step's arrays; None rows are padding (fed nothing that lands in the cache)."""
        batch = len(rows)
        token_ids = np.zeros((batch, tokens), np.int32)
        positions = np.full((batch, tokens), self.pad_position, np.int32)
        next_ids = np.zeros((batch, tokens), np.int32)
        last_index = np.zeros((batch,), np.int32)
        counted = np.zeros((batch,), np.bool_)
        bitmask = np.empty((batch, bitmask_width(self.vocab_size)), np.int32)
        for i, row in enumerate(rows):
            bitmask[i] = self.full_bitmask if row is None or row.bitmask is None else row.bitmask
            if row is None:
                continue
            n = len(row.tokens)
            token_ids[i, :n] = row.tokens
            positions[i, :n] = np.arange(row.start_position, row.start_position + n)
            if row.next_ids is not None:
                next_ids[i, : len(row.next_ids)] = row.next_ids
            last_index[i] = n - 1
            counted[i] = row.counted
        sampling = SamplingBatch.from_params(
            [r.params if r else None for r in rows],
            [r.seed if r else 0 for r in rows],
            [r.generated if r else 0 for r in rows],
        )
        return StepInputs(
            tokens=jnp.asarray(token_ids),
            positions=jnp.asarray(positions),
            next_ids=jnp.asarray(next_ids),
            row_start=jnp.int32(row_start),
            last_index=jnp.asarray(last_index),
            counted=jnp.asarray(counted),
            bitmask=jnp.asarray(bitmask),
            want_prompt_logprobs=jnp.asarray(want_prompt_logprobs),
            sampling=sampling,
        )

    def _run(
        self,
        rows: list[RowInput | None],
        tokens: int,
        row_start: int,
        kv_len: int,
        want_prompt_logprobs: bool,
    ) -> tuple[SampleResult, PromptLogprobs]:
        exe = self._executable(len(rows), tokens, kv_len)
        inputs = self._pack(rows, tokens, row_start, want_prompt_logprobs=want_prompt_logprobs)
        result, prompt_lp, self.cache, self.sampler_state = exe(
            self.model.state, self.cache, self.sampler_state, inputs
        )
        return result, prompt_lp

    @staticmethod
    def _row_outputs(result: SampleResult, count: int) -> list[RowOutput]:
        tokens, logprob, rank = np.asarray(result.tokens), np.asarray(result.logprob), np.asarray(result.rank)
        top_ids, top_lp = np.asarray(result.top_ids), np.asarray(result.top_logprobs)
        return [
            RowOutput(int(tokens[i]), float(logprob[i]), int(rank[i]), top_ids[i], top_lp[i])
            for i in range(count)
        ]

    # ---------------------------------------------------------------- the engine's calls

    def start_sequence(self, slot: int, params: SamplingParams, prompt_ids: list[int]) -> None:
        """A sequence takes `slot`: load its logit bias and prompt-token set, reset its output counts."""
        bias = np.zeros((self.vocab_size,), np.float32)
        for token_id, value in params.logit_bias.items():
            bias[token_id] = value
        prompt_mask = np.zeros((self.vocab_size,), np.bool_)
        prompt_mask[np.asarray(prompt_ids, np.int64)] = True
        self.sampler_state = self._init_slot(self.sampler_state, jnp.int32(slot), bias, prompt_mask)

    def prefill_chunk(self, slot: int, row: RowInput) -> tuple[RowOutput, PromptLogprobRows | None]:
        """Feed up to one chunk of prompt tokens for the sequence in `slot`.

        The sampled token matters only when this chunk ends the prompt (row.counted). Prompt logprobs
        come back when row.next_ids is given.
        """
        n = len(row.tokens)
        chunk = bucket_for(n, self.buckets.chunk_sizes)
        kv_len = bucket_for(row.start_position + n, self.buckets.kv_lens)
        want = row.next_ids is not None
        result, prompt_lp = self._run([row], chunk, slot, kv_len, want)
        prompt_rows = None
        if want:
            prompt_rows = PromptLogprobRows(
                logprob=np.asarray(prompt_lp.logprob)[0, :n],
                rank=np.asarray(prompt_lp.rank)[0, :n],
                top_ids=np.asarray(prompt_lp.top_ids)[0, :n],
                top_logprobs=np.asarray(prompt_lp.top_logprobs)[0, :n],
            )
        return self._row_outputs(result, 1)[0], prompt_rows

    def decode(self, rows: list[RowInput | None]) -> list[RowOutput | None]:
        """One token for every non-None row; row i is cache slot i."""
        batch = bucket_for(len(rows), self.buckets.batch_sizes)
        padded = rows + [None] * (batch - len(rows))
        max_position = max(r.start_position for r in padded if r is not None)
        kv_len = bucket_for(max_position + 1, self.buckets.kv_lens)
        result, _ = self._run(padded, 1, 0, kv_len, False)
        outputs = self._row_outputs(result, len(rows))
        return [out if row is not None else None for out, row in zip(outputs, rows, strict=True)]
