"""The batched sampler: a pure function from logits and per-row parameters to next tokens.

Rows with different parameters share one call. Greedy rows (temperature 0) take the exact argmax of
the raw logits; the others draw from softmax(logits / temperature) restricted to the top-p nucleus,
with a per-row PRNG key derived from the row's seed and step so a seeded request is reproducible
whatever else shares its batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from jaxserve.sampling.params import SamplingParams


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class SamplingBatch:
    """Per-row sampling inputs, all [B]."""

    temperature: jax.Array  # float32; 0 = greedy
    top_p: jax.Array  # float32 in (0, 1]
    seed: jax.Array  # uint32
    step: jax.Array  # int32: tokens generated so far by the row, the second half of its PRNG key

    @classmethod
    def from_params(
        cls, params: list[SamplingParams | None], seeds: list[int], steps: list[int]
    ) -> SamplingBatch:
        """Rows for `params`; None marks a padding row (sampled greedily and discarded)."""
        return cls(
            temperature=jnp.asarray([p.temperature if p else 0.0 for p in params], jnp.float32),
            top_p=jnp.asarray([p.top_p if p else 1.0 for p in params], jnp.float32),
            seed=jnp.asarray(np.asarray(seeds, dtype=np.uint32)),
            step=jnp.asarray(steps, jnp.int32),
        )


def sample(logits: jax.Array, batch: SamplingBatch) -> jax.Array:
    """logits: [B, V] float32 -> next tokens [B] int32."""
    greedy_tokens = jnp.argmax(logits, axis=-1).astype(jnp.int32)
    # Guard the division: greedy rows have temperature 0 and their sampled value is discarded.
    safe_temperature = jnp.where(batch.temperature > 0, batch.temperature, 1.0)
    scaled = logits / safe_temperature[:, None]
    scaled = jax.lax.cond(
        jnp.any(batch.top_p < 1.0), lambda x: _top_p_filter(x, batch.top_p), lambda x: x, scaled
    )
    keys = jax.vmap(lambda s, n: jax.random.fold_in(jax.random.key(s), n))(batch.seed, batch.step)
    drawn = jax.vmap(jax.random.categorical)(keys, scaled).astype(jnp.int32)
    return jnp.where(batch.temperature > 0, drawn, greedy_tokens)


def _top_p_filter(scaled: jax.Array, top_p: jax.Array) -> jax.Array:
    """Keep the smallest set of most likely tokens whose probability reaches top_p (at least one)."""
    order = jnp.argsort(-scaled, axis=-1)
    sorted_logits = jnp.take_along_axis(scaled, order, axis=-1)
    probs = jax.nn.softmax(sorted_logits, axis=-1)
    mass_before = jnp.cumsum(probs, axis=-1) - probs
    keep_sorted = mass_before < top_p[:, None]
    # The k-th largest logit that is kept is the threshold; ties at the threshold stay in.
    kept_count = jnp.sum(keep_sorted, axis=-1)
    threshold = jnp.take_along_axis(sorted_logits, (kept_count - 1)[:, None], axis=-1)
    return jnp.where(scaled >= threshold, scaled, -jnp.inf)
