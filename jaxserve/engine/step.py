"""The one jitted function per step: model forward, sampling, logprobs and sampler-state update.

Everything here is pure: the KV cache and the per-slot sampler state go in and come back out (both
donated), so the runner owns no device state beyond the buffers it threads through.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
from flax import nnx

from jaxserve.modeling.kv_cache import PagedKVCache
from jaxserve.sampling.batch import SamplingBatch
from jaxserve.sampling.logprobs import TOP_LOGPROBS, prompt_token_logprobs
from jaxserve.sampling.sampler import SampleResult, sample
from jaxserve.sampling.slot_state import SlotSamplingState, count_output_tokens


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class PromptLogprobs:
    """For each fed token, the logprob of the token after it (a prompt's next token), all [B, T(, K)]."""

    logprob: jax.Array
    rank: jax.Array
    top_ids: jax.Array
    top_logprobs: jax.Array


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class StepInputs:
    """Host-built arrays of one step. tokens/positions/next_ids: [B, T]; block_tables [B, P]; bitmask [B, W];
    the rest [B]."""

    tokens: jax.Array
    # A decode step dispatched before the previous one's tokens reached the host feeds those tokens
    # straight from the previous step's output: row i takes previous_tokens[i] where feed_previous[i].
    previous_tokens: jax.Array  # [B] int32
    feed_previous: jax.Array  # [B] bool
    positions: jax.Array
    next_ids: jax.Array  # the prompt token after each fed token (for prompt logprobs), 0 elsewhere
    block_tables: (
        jax.Array  # the KV-cache pages of each row's sequence; padding and freed entries read page 0
    )
    slots: jax.Array  # each row's sampler-state slot; out of range for padding rows (reads 0, writes dropped)
    last_index: jax.Array  # index into T of the token whose logits are sampled
    counted: jax.Array  # bool: the sampled token is real output (False for padding rows, mid-prompt chunks)
    bitmask: jax.Array  # int32 words of allowed tokens
    want_prompt_logprobs: jax.Array  # scalar bool
    sampling: SamplingBatch


def model_step(
    graphdef: nnx.GraphDef,
    params: nnx.State,
    cache: PagedKVCache,
    sampler_state: SlotSamplingState,
    inputs: StepInputs,
) -> tuple[SampleResult, PromptLogprobs, PagedKVCache, SlotSamplingState]:
    """Forward the step's tokens, sample after each row's last real token, update the slots' state."""
    model = nnx.merge(graphdef, params)
    fed = jnp.where(inputs.feed_previous[:, None], inputs.previous_tokens[:, None], inputs.tokens)
    hidden, cache = model(fed, inputs.positions, cache, inputs.block_tables)  # [B, T, D]
    batch, tokens = inputs.tokens.shape
    last_hidden = jnp.take_along_axis(hidden, inputs.last_index[:, None, None], axis=1)[:, 0]  # [B, D]
    logits = model.logits(last_hidden)  # [B, V]

    result = sample(logits, inputs.sampling, inputs.bitmask, sampler_state, inputs.slots)
    sampler_state = count_output_tokens(sampler_state, inputs.slots, result.tokens, inputs.counted)

    def with_prompt_logprobs() -> PromptLogprobs:
        all_logits = model.logits(hidden).reshape(batch * tokens, -1)  # [B*T, V]: only when asked
        lp, rank, top_ids, top_lp = prompt_token_logprobs(all_logits, inputs.next_ids.reshape(-1))
        return PromptLogprobs(
            logprob=lp.reshape(batch, tokens),
            rank=rank.reshape(batch, tokens),
            top_ids=top_ids.reshape(batch, tokens, TOP_LOGPROBS),
            top_logprobs=top_lp.reshape(batch, tokens, TOP_LOGPROBS),
        )

    def without() -> PromptLogprobs:
        return PromptLogprobs(
            logprob=jnp.zeros((batch, tokens), jnp.float32),
            rank=jnp.zeros((batch, tokens), jnp.int32),
            top_ids=jnp.zeros((batch, tokens, TOP_LOGPROBS), jnp.int32),
            top_logprobs=jnp.zeros((batch, tokens, TOP_LOGPROBS), jnp.float32),
        )

    prompt_lp = jax.lax.cond(inputs.want_prompt_logprobs, with_prompt_logprobs, without)
    return result, prompt_lp, cache, sampler_state


def model_step_on_leaves(
    graphdef: nnx.GraphDef,
    params_tree: jax.tree_util.PyTreeDef,
    param_leaves: list[jax.Array],
    cache: PagedKVCache,
    sampler_state: SlotSamplingState,
    inputs: StepInputs,
) -> tuple[SampleResult, PromptLogprobs, PagedKVCache, SlotSamplingState]:
    """`model_step` with the weights passed as their flat list of leaves.

    Why: every call of a compiled step flattens its arguments on the host, and an nnx.State flattens in
    Python. For SmolLM2 (272 weights) a decode step's dispatch took 4.0 ms with the State and 2.0 ms with
    the list, against a 43 ms step: host time that on 2 cores is taken from the step itself."""
    params = jax.tree.unflatten(params_tree, param_leaves)
    return model_step(graphdef, params, cache, sampler_state, inputs)
