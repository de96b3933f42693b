"""Shared helpers for comparing the JAX model with transformers goldens."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxserve.engine.buckets import BucketConfig
from jaxserve.engine.runner import ModelRunner, RowInput
from jaxserve.modeling.kv_cache import PagedKVCache
from jaxserve.modeling.loader import LoadedModel
from jaxserve.sampling.params import SamplingParams

GOLDENS = Path(__file__).parent.parent / "goldens"
GREEDY = SamplingParams(temperature=0.0)


def load_golden(name: str) -> dict[str, Any]:
    return json.loads((GOLDENS / name).read_text())


def all_position_logits(model: LoadedModel, token_ids: list[int]) -> np.ndarray:
    """Logits [T, V] for every position of one sequence, through the same decoder the server runs."""
    n = len(token_ids)

    @jax.jit
    def forward(state: nnx.State, tokens: jax.Array) -> jax.Array:
        decoder = nnx.merge(model.graphdef, state)
        cache = PagedKVCache.allocate(model.config, 1, n, model.dtype)  # one page holding the sequence
        positions = jnp.arange(n, dtype=jnp.int32)[None]
        hidden, _ = decoder(tokens, positions, cache, jnp.zeros((1, 1), jnp.int32))
        return decoder.logits(hidden)[0]

    return np.asarray(forward(model.state, jnp.asarray([token_ids], jnp.int32)))


def greedy_continuation(runner: ModelRunner, prompt: list[int], steps: int) -> list[int]:
    """Raw argmax continuation (no EOS stop) through the serving path: prefill chunks, then decode."""
    runner.start_sequence(0, GREEDY, prompt, [])
    pages = list(range(runner.num_pages))  # the one sequence owns the whole pool
    done = 0
    token = None
    while done < len(prompt):
        chunk = runner.buckets.chunk_for(len(prompt) - done)
        ends = done + chunk == len(prompt)
        sampled, _ = runner.prefill_chunk(
            RowInput(prompt[done : done + chunk], done, GREEDY, 0, 0, 0, pages, counted=ends)
        )
        token = sampled.token
        done += chunk
    assert token is not None
    out = [token]
    while len(out) < steps:
        position = len(prompt) + len(out) - 1
        decoded = runner.decode([RowInput([out[-1]], position, GREEDY, 0, len(out), 0, pages)])[0]
        out.append(decoded.token)
    return out


def small_runner(model: LoadedModel, max_model_len: int, chunk: int) -> ModelRunner:
    """A one-slot runner with one prefill chunk size, so a parity test compiles only a few shapes."""
    buckets = BucketConfig(
        max_num_seqs=1,
        max_model_len=max_model_len,
        prefill_chunk_sizes=(chunk,),
        min_kv_len=max_model_len,
    )
    return ModelRunner(model, buckets, buckets.max_pages_per_seq)


def last_position_logits(model: LoadedModel, token_ids: list[int], pad_to: int) -> np.ndarray:
    """Logits [V] after the last token, with the sequence padded to a fixed length (one compile for all)."""
    n = len(token_ids)
    assert n <= pad_to
    tokens = np.zeros((1, pad_to), np.int32)
    tokens[0, :n] = token_ids
    positions = np.full((1, pad_to), pad_to, np.int32)  # padding lands past the page's end: dropped
    positions[0, :n] = np.arange(n)
    return np.asarray(_padded_forward(model.graphdef, model.state, tokens, positions, n - 1, model.dtype))


@functools.partial(jax.jit, static_argnums=(0, 5))
def _padded_forward(
    graphdef: nnx.GraphDef,
    state: nnx.State,
    tokens: jax.Array,
    positions: jax.Array,
    last: jax.Array,
    dtype: Any,
) -> jax.Array:
    decoder = nnx.merge(graphdef, state)
    pad_to = tokens.shape[1]
    cache = PagedKVCache.allocate(decoder.cfg, 1, pad_to, dtype)  # one page holding the sequence
    hidden, _ = decoder(tokens, positions, cache, jnp.zeros((1, 1), jnp.int32))
    return decoder.logits(jax.lax.dynamic_index_in_dim(hidden[0], last, keepdims=False))


def top2_gap(case: dict[str, Any], step: int) -> float:
    """How far the reference's chosen token led its runner-up at one greedy step (0 means a tie)."""
    top = case["greedy_top_logits"][step]
    return float(top[0] - top[1])


def first_divergence(ours: list[int], golden: list[int]) -> int | None:
    """Index of the first differing token, or None when equal."""
    for i, (a, b) in enumerate(zip(ours, golden, strict=True)):
        if a != b:
            return i
    return None


def assert_top_logits_match(
    model: LoadedModel, case: dict[str, Any], *, pad_to: int, top: int, atol: float
) -> None:
    """The model's next-token logits after a golden case's prompt: the same top ids, values within atol."""
    logits = last_position_logits(model, case["prompt_ids"], pad_to)
    top_ids = case["top_ids"][:top]
    assert list(np.argsort(-logits)[:top]) == top_ids
    np.testing.assert_allclose(logits[top_ids], case["top_logits"][:top], atol=atol, rtol=0)


def assert_greedy_matches(runner: ModelRunner, case: dict[str, Any], *, atol: float) -> None:
    """The serving path's greedy continuation equals the golden's, except after a near-tie in the reference
    (top-2 logits closer than `atol`), where a correct implementation may pick the other token."""
    golden = case["greedy_continuation"]
    ours = greedy_continuation(runner, case["prompt_ids"], len(golden))
    diverged = first_divergence(ours, golden)
    if diverged is not None:
        gap = top2_gap(case, diverged)
        assert gap < atol, f"diverged at token {diverged} where transformers' top-2 gap is {gap}"
