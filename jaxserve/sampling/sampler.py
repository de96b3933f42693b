"""The batched sampler: a pure function from logits and per-row parameters to next tokens and logprobs.

Rows with different parameters share one call; every output has a fixed shape, so one compiled step
serves any mix. The transforms run in vLLM's order (DESIGN principle 4):

  bitmask (allowed tokens, bad words, min_tokens) -> logit bias -> penalties -> greedy rows: argmax
  -> temperature -> min-p -> top-k / top-p -> draw with the row's key fold_in(key(seed), step)

Stages no row needs are skipped (lax.switch / lax.cond), so an all-greedy batch without restrictions,
bias or penalties costs one pass, the argmax, and reads neither its bitmask nor the per-slot state.
Logprobs come from the raw logits and are computed only when some row asked for them.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp

from jaxserve.sampling.argmax import first_argmax
from jaxserve.sampling.batch import SamplingBatch
from jaxserve.sampling.bitmask import apply_bitmask
from jaxserve.sampling.draw import categorical, row_keys
from jaxserve.sampling.filters import apply_min_p, apply_top_k_top_p
from jaxserve.sampling.logprobs import TOP_LOGPROBS, token_logprobs
from jaxserve.sampling.params import GREEDY_TEMPERATURE
from jaxserve.sampling.penalties import any_penalty, apply_penalties
from jaxserve.sampling.slot_state import SlotSamplingState, slot_rows


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class SampleResult:
    """One step's sample per row. The logprob fields hold meaning only for rows that asked for logprobs
    (SamplingBatch.num_logprobs >= 0); when no row asked they are zeros / id -1 / -inf."""

    tokens: jax.Array  # [B] int32
    logprob: jax.Array  # [B] float32: the chosen token's raw-model logprob
    rank: jax.Array  # [B] int32: its rank, 1 = most likely
    top_ids: jax.Array  # [B, TOP_LOGPROBS] int32, most likely first
    top_logprobs: jax.Array  # [B, TOP_LOGPROBS] float32


def sample(
    logits: jax.Array, batch: SamplingBatch, bitmask: jax.Array, state: SlotSamplingState, slots: jax.Array
) -> SampleResult:
    """logits: [B, V] float32 raw model output; bitmask: [B, W] int32 allowed tokens; state: the per-slot
    bias, prompt tokens and output counts; slots: [B] int32, each row's slot in `state` (out of range for
    a padding row, which reads zeros)."""
    raw = logits.astype(jnp.float32)
    random_rows = batch.temperature >= GREEDY_TEMPERATURE  # [B]

    def processed(adjusted: bool) -> jax.Array:
        """If `adjusted`, bitmask, bias and penalties: elementwise, fused into whatever reads it. Neutral
        rows come through bit-identical (an all-allowed mask, x + 0, and see apply_penalties)."""
        if not adjusted:
            return raw
        x = apply_bitmask(raw, bitmask) + slot_rows(state.bias, slots)
        return apply_penalties(
            x, slot_rows(state.prompt_mask, slots), slot_rows(state.output_counts, slots), batch
        )

    def greedy(adjusted: bool) -> jax.Array:
        return first_argmax(processed(adjusted))

    def mixed() -> jax.Array:
        x = processed(True)  # [B, V], materialised once for the argmax and the draw
        greedy_tokens = first_argmax(x)  # exact, before any temperature
        return jnp.where(random_rows, _draw(x, batch, random_rows), greedy_tokens)

    # One branch per kind of batch, each computed from the inputs so an all-greedy batch fuses into a
    # single pass (a cond between stages would materialise the [B, V] logits at each one). The bitmask
    # and the state's rows are read inside the branches that need them. For a batch-64 decode step on a
    # 2-core CPU (`benchmarks/profile_decode.py`), gathering every row's state and masking the logits
    # cost ~25 ms of 224; the plain branch takes ~1 ms.
    adjusted = jnp.any(batch.biased | batch.restricted) | any_penalty(batch)
    branch = jnp.where(jnp.any(random_rows), 2, adjusted.astype(jnp.int32))
    tokens = jax.lax.switch(branch, [lambda: greedy(False), lambda: greedy(True), mixed])
    logprob, rank, top_ids, top_logprobs = jax.lax.cond(
        jnp.any(batch.num_logprobs >= 0), lambda: token_logprobs(raw, tokens), lambda: _no_logprobs(tokens)
    )
    return SampleResult(tokens=tokens, logprob=logprob, rank=rank, top_ids=top_ids, top_logprobs=top_logprobs)


def _draw(x: jax.Array, batch: SamplingBatch, random_rows: jax.Array) -> jax.Array:
    """Temperature, min-p, top-k/top-p and the draw, for the random rows (greedy rows' results are
    discarded, so their filters are switched off to keep them off the filters' slow paths)."""
    temperature = jnp.where(random_rows, batch.temperature, 1.0)  # [B]; 1 avoids dividing by 0
    x = x / temperature[:, None]
    x = apply_min_p(x, jnp.where(random_rows, batch.min_p, 0.0))
    x = apply_top_k_top_p(x, jnp.where(random_rows, batch.top_k, 0), jnp.where(random_rows, batch.top_p, 1.0))
    return categorical(x, row_keys(batch.seed, batch.step))


def _no_logprobs(tokens: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    rows = tokens.shape[0]
    return (
        jnp.zeros((rows,), jnp.float32),
        jnp.zeros((rows,), jnp.int32),
        jnp.full((rows, TOP_LOGPROBS), -1, jnp.int32),
        jnp.full((rows, TOP_LOGPROBS), -jnp.inf, jnp.float32),
    )
