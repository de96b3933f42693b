"""Logprobs for users: the chosen token's log-probability, its rank and the top alternatives.

They come from the raw model logits (vLLM's default `logprobs_mode="raw_logprobs"`): what the model
thought, not what penalties, bias, masks or temperature made of it. log_softmax runs in float32.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxserve.sampling.params import MAX_LOGPROBS

TOP_LOGPROBS = MAX_LOGPROBS
"""Alternatives computed per token, the most any request may ask for; the engine keeps what was asked."""


def token_logprobs(logits: jax.Array, tokens: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """logits: [N, V]; tokens: [N] int32. Returns chosen_logprob [N] float32, chosen_rank [N] int32
    (1 = most likely; tokens tied with the chosen one count ahead of it, as in vLLM), top_ids [N, 20]
    int32 and top_logprobs [N, 20] float32, most likely first (ties: lower id first). A vocabulary under
    20 tokens pads with id -1 and logprob -inf.

    log_softmax(x) = x - logsumexp(x) is applied only to the values returned: ranking and top-20 run on
    the logits themselves (the same order), which saves writing and re-reading a [N, V] array.
    """
    x = logits.astype(jnp.float32)  # [N, V]
    normaliser = jax.nn.logsumexp(x, axis=-1)  # [N]
    chosen = jnp.take_along_axis(x, tokens[:, None], axis=-1)[:, 0]
    rank = jnp.sum(x >= chosen[:, None], axis=-1, dtype=jnp.int32)
    count = min(TOP_LOGPROBS, x.shape[-1])
    top_logits, top_ids = jax.lax.top_k(x, count)
    pad = ((0, 0), (0, TOP_LOGPROBS - count))
    top_ids = jnp.pad(top_ids.astype(jnp.int32), pad, constant_values=-1)
    top_logprobs = jnp.pad(top_logits - normaliser[:, None], pad, constant_values=-jnp.inf)
    return chosen - normaliser, rank, top_ids, top_logprobs


def prompt_token_logprobs(
    logits: jax.Array, next_ids: jax.Array
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """prompt_logprobs: logits [T, V] at each prompt position, next_ids [T] the prompt token that
    follows it; the same four arrays over T positions."""
    return token_logprobs(logits, next_ids)
