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
from flax import nnx

from jaxserve.engine.buckets import BucketConfig, bucket_for
from jaxserve.modeling.kv_cache import SlotKVCache
from jaxserve.modeling.loader import LoadedModel
from jaxserve.sampling.params import SamplingParams
from jaxserve.sampling.sampler import SamplingBatch, sample

log = logging.getLogger(__name__)


def _forward_and_sample(
    graphdef: nnx.GraphDef,
    state: nnx.State,
    cache: SlotKVCache,
    tokens: jax.Array,
    positions: jax.Array,
    row_start: jax.Array,
    last_index: jax.Array,
    sampling: SamplingBatch,
    kv_len: int,
) -> tuple[jax.Array, SlotKVCache]:
    """One model step plus sampling at each row's last real token.

    tokens, positions: [B, T]; last_index: [B] index into T of the token whose logits are sampled.
    Returns next tokens [B] int32 and the updated cache.
    """
    model = nnx.merge(graphdef, state)
    hidden, cache = model(tokens, positions, cache, row_start, kv_len)
    last_hidden = jnp.take_along_axis(hidden, last_index[:, None, None], axis=1)[:, 0]  # [B, D]
    return sample(model.logits(last_hidden), sampling), cache


@dataclass(frozen=True)
class RowInput:
    """One row of a step: the tokens to feed, the position of the first one, and how to sample after it."""

    tokens: list[int]
    start_position: int
    params: SamplingParams
    seed: int
    generated: int


class ModelRunner:
    """Owns the weights, the KV cache and the compiled step executables."""

    def __init__(self, model: LoadedModel, buckets: BucketConfig) -> None:
        self.model = model
        self.buckets = buckets
        self.cache = SlotKVCache.allocate(
            model.config, buckets.max_num_seqs, buckets.max_model_len, model.dtype
        )
        self._jitted = jax.jit(
            _forward_and_sample, static_argnums=(0,), static_argnames=("kv_len",), donate_argnums=(2,)
        )
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
        sampling = SamplingBatch.from_params([None] * batch, [0] * batch, [0] * batch)
        exe = self._jitted.lower(
            self.model.graphdef,
            self.model.state,
            self.cache,
            jnp.zeros((batch, tokens), jnp.int32),
            jnp.zeros((batch, tokens), jnp.int32),
            jnp.int32(0),
            jnp.zeros((batch,), jnp.int32),
            sampling,
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
        """Compile every bucketed shape now, so serving never compiles."""
        start = time.perf_counter()
        shapes = [s for s in self.buckets.all_step_shapes() if s not in self._compiled]
        # XLA compiles with the GIL released: a thread per core cut a cold warm-up by ~27% on 2 cores.
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            for index, _ in enumerate(pool.map(self._compile, shapes)):
                log.info("warm-up %d/%d", index + 1, len(shapes))
        self.frozen = True
        self.warmup_seconds = time.perf_counter() - start
        log.info("warm-up compiled %d step shapes in %.1fs", len(shapes), self.warmup_seconds)

    def prefill_chunk(self, slot: int, row: RowInput) -> int | None:
        """Feed up to one chunk of prompt tokens for the sequence in `slot`.

        Returns the sampled next token id; the caller uses it only when this chunk ends the prompt.
        """
        n = len(row.tokens)
        chunk = bucket_for(n, self.buckets.chunk_sizes)
        kv_len = bucket_for(row.start_position + n, self.buckets.kv_lens)
        tokens = np.zeros((1, chunk), np.int32)
        tokens[0, :n] = row.tokens
        positions = np.full((1, chunk), self.pad_position, np.int32)
        positions[0, :n] = np.arange(row.start_position, row.start_position + n)
        sampling = SamplingBatch.from_params([row.params], [row.seed], [row.generated])
        exe = self._executable(1, chunk, kv_len)
        next_tokens, self.cache = exe(
            self.model.state,
            self.cache,
            tokens,
            positions,
            jnp.int32(slot),
            np.asarray([n - 1], np.int32),
            sampling,
        )
        return int(np.asarray(next_tokens)[0])

    def decode(self, rows: list[RowInput | None]) -> list[int | None]:
        """One token for every non-None row; row i is cache slot i."""
        batch = bucket_for(len(rows), self.buckets.batch_sizes)
        padded = rows + [None] * (batch - len(rows))
        max_position = max(r.start_position for r in padded if r is not None)
        kv_len = bucket_for(max_position + 1, self.buckets.kv_lens)
        tokens = np.zeros((batch, 1), np.int32)
        positions = np.full((batch, 1), self.pad_position, np.int32)
        for i, r in enumerate(padded):
            if r is not None:
                tokens[i, 0] = r.tokens[0]
                positions[i, 0] = r.start_position
        sampling = SamplingBatch.from_params(
            [r.params if r else None for r in padded],
            [r.seed if r else 0 for r in padded],
            [r.generated if r else 0 for r in padded],
        )
        exe = self._executable(batch, 1, kv_len)
        next_tokens, self.cache = exe(
            self.model.state,
            self.cache,
            tokens,
            positions,
            jnp.int32(0),
            np.zeros((batch,), np.int32),
            sampling,
        )
        host = np.asarray(next_tokens)
        return [int(host[i]) if r is not None else None for i, r in enumerate(rows)]
