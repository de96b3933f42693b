"""Repetition, frequency and presence penalties (vLLM's formulas), and the output counts they read.

Repetition (Keskar et al., CTRL) scales the logit of every token seen in the prompt or the output
towards "less likely": positive logits are divided by the penalty, the others multiplied by it.
Frequency and presence (OpenAI's definitions) then subtract `frequency * count` and `presence * [count
> 0]`, counting the output only.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxserve.sampling.batch import SamplingBatch


def apply_penalties(
    logits: jax.Array, prompt_mask: jax.Array, output_counts: jax.Array, batch: SamplingBatch
) -> jax.Array:
    """logits: [B, V] float32; prompt_mask: [B, V] bool (token occurs in the prompt); output_counts:
    [B, V] int32 (occurrences in the output so far). Rows whose penalties are neutral (1, 0, 0) come
    back bit-identical (x / 1, x * 1 and x - 0 are exact).

    Elementwise only, so it fuses with its neighbours; the sampler leaves it out of the trace branch
    taken when no row has a penalty (`any_penalty`), which saves reading the [B, V] state.
    """
    repetition = batch.repetition_penalty[:, None]  # [B, 1]
    in_output = output_counts > 0  # [B, V]
    seen = prompt_mask | in_output
    x = jnp.where(seen, jnp.where(logits > 0, logits / repetition, logits * repetition), logits)
    frequency = batch.frequency_penalty[:, None] * output_counts.astype(jnp.float32)
    presence = batch.presence_penalty[:, None] * in_output.astype(jnp.float32)
    return x - frequency - presence


def any_penalty(batch: SamplingBatch) -> jax.Array:
    """Scalar bool: some row has a non-neutral penalty."""
    return jnp.any(
        (batch.repetition_penalty != 1.0) | (batch.frequency_penalty != 0.0) | (batch.presence_penalty != 0.0)
    )
