"""Per-request sampling parameters as rows of device arrays, so requests that differ share one call."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import jax
import numpy as np

from jaxserve.sampling.params import SamplingParams

_INT32_MAX = 2**31 - 1


def host_array(values: np.ndarray) -> jax.Array:
    """A per-step input built on the host in NumPy. It is typed as the device array it becomes: the runner
    moves the whole step onto the mesh, with its sharding, in one go before the jitted call."""
    return cast(jax.Array, values)


_PADDING = SamplingParams(temperature=0.0)
"""A padding row samples greedily with every feature off: the cheapest row, and its token is discarded."""


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class SamplingBatch:
    """Per-row sampling inputs, all [B]. A feature's neutral value means "off" for that row."""

    temperature: jax.Array  # float32; 0 = greedy row (exact argmax)
    top_p: jax.Array  # float32 in (0, 1]; 1 = off
    top_k: jax.Array  # int32; 0 = off
    min_p: jax.Array  # float32 in [0, 1]; 0 = off
    presence_penalty: jax.Array  # float32; 0 = off
    frequency_penalty: jax.Array  # float32; 0 = off
    repetition_penalty: jax.Array  # float32; 1 = off
    biased: jax.Array  # bool: the row has a logit_bias (its slot's bias row is not all zeros)
    restricted: jax.Array  # bool: the row's bitmask is not all-allowed
    seed: jax.Array  # uint32: with step, the row's PRNG key fold_in(key(seed), step)
    step: jax.Array  # int32: tokens generated so far by the row
    num_logprobs: jax.Array  # int32: top logprobs the row asked for; -1 = none (lets the sampler skip them)

    @classmethod
    def from_params(
        cls,
        params: Sequence[SamplingParams | None],
        seeds: Sequence[int],
        steps: Sequence[int],
        restricted: Sequence[bool] | None = None,
    ) -> SamplingBatch:
        """Rows for `params`; None marks a padding row (greedy, no penalties, no logprobs). `restricted`
        marks the rows whose step bitmask allows fewer than every token (default: none).

        Seeds are reduced to their low 32 bits (the engine folds wider seeds first). The fields are host
        (NumPy) arrays: the runner moves the whole step onto the device mesh at once, with its sharding.
        """
        if not len(params) == len(seeds) == len(steps):
            raise ValueError(f"{len(params)} params, {len(seeds)} seeds and {len(steps)} steps")
        rows = [_PADDING if p is None else p for p in params]
        # Greedy rows ignore temperature and the filters (vLLM clears them too): temperature 0 marks
        # them, and neutral filter values keep them off the filters' slow paths.
        drawn = [_PADDING if p.greedy else p for p in rows]

        def column(values: Sequence[float | int], dtype: type) -> jax.Array:
            return host_array(np.asarray(values, dtype=dtype))

        return cls(
            temperature=column([p.temperature for p in drawn], np.float32),
            top_p=column([p.top_p for p in drawn], np.float32),
            top_k=column([min(p.top_k, _INT32_MAX) for p in drawn], np.int32),  # >= vocab is off anyway
            min_p=column([p.min_p for p in drawn], np.float32),
            presence_penalty=column([p.presence_penalty for p in rows], np.float32),
            frequency_penalty=column([p.frequency_penalty for p in rows], np.float32),
            repetition_penalty=column([p.repetition_penalty for p in rows], np.float32),
            biased=column([bool(p.logit_bias) for p in rows], np.bool_),
            restricted=column(list(restricted or [False] * len(rows)), np.bool_),
            seed=column([s & 0xFFFFFFFF for s in seeds], np.uint32),
            step=column(list(steps), np.int32),
            num_logprobs=column([-1 if p.logprobs is None else p.logprobs for p in rows], np.int32),
        )
