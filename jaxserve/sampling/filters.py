"""min-p, top-k and top-p: remove unlikely tokens (set their logits to -inf) before the draw.

All take temperature-scaled logits [B, V] float32 and per-row parameters [B]; a row whose feature is
off comes back bit-identical, and a filter no row uses costs one [B] test (lax.cond).

Ties at a threshold are kept: top-k keeps every token whose logit is >= the k-th largest (vLLM's rule,
so a row can keep more than k tokens), and top-p keeps every token whose logit equals that of the last
token needed to reach top_p (vLLM breaks that tie by sort position, arbitrarily). At least one token
always survives.

Neither filter sorts the vocabulary. `lax.top_k` picks the 256 largest logits per row; the top-k
threshold is the k-th of them and the top-p threshold is found by a cumulative sum over them. Only rows
that this cannot decide (k > 256, or a nucleus wider than 256 tokens) run the exact bisection in
`thresholds`, one row at a time, under a per-row lax.cond.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from jaxserve.sampling.thresholds import kth_largest, nucleus_threshold

TOP_CANDIDATES = 256
"""Candidates per row from lax.top_k: covers usual top_k values and most nuclei; top_k's cost grows with
it (at B=64, V=49152 on two cores: ~11 ms for 64, ~19 ms for 256, ~55 ms for 1024)."""


def apply_min_p(logits: jax.Array, min_p: jax.Array) -> jax.Array:
    """Remove tokens less likely than min_p times the most likely one (vLLM's min-p).

    logits: [B, V] float32; min_p: [B] float32 in [0, 1], 0 = off. p_i < min_p * p_max is tested as
    logit_i < logit_max + log(min_p): the same inequality without a softmax pass.
    """

    def filter_rows(x: jax.Array) -> jax.Array:
        threshold = jnp.max(x, axis=-1) + jnp.log(min_p)  # [B]; -inf where min_p = 0
        remove = (min_p > 0)[:, None] & (x < threshold[:, None])
        return jnp.where(remove, -jnp.inf, x)

    return jax.lax.cond(jnp.any(min_p > 0), filter_rows, lambda x: x, logits)


def apply_top_k_top_p(logits: jax.Array, top_k: jax.Array, top_p: jax.Array) -> jax.Array:
    """top-k, then top-p over the renormalised survivors (vLLM's order).

    logits: [B, V] float32; top_k: [B] int32, 0 (or >= V) = off; top_p: [B] float32 in (0, 1], 1 = off.
    """
    vocab = logits.shape[-1]
    k_on = (top_k > 0) & (top_k < vocab)
    p_on = top_p < 1.0
    return jax.lax.cond(
        jnp.any(k_on | p_on), lambda x: _filter(x, top_k, k_on, top_p, p_on), lambda x: x, logits
    )


def _filter(x: jax.Array, top_k: jax.Array, k_on: jax.Array, top_p: jax.Array, p_on: jax.Array) -> jax.Array:
    num_candidates = min(TOP_CANDIDATES, x.shape[-1])
    candidates, _ = jax.lax.top_k(x, num_candidates)  # [B, C] descending
    k_far = k_on & (top_k > num_candidates)
    k_index = jnp.clip(top_k - 1, 0, num_candidates - 1)
    kth = jnp.take_along_axis(candidates, k_index[:, None], axis=-1)[:, 0]  # [B]
    kth = jax.lax.cond(jnp.any(k_far), lambda: _rows_where(k_far, kth, kth_largest, x, top_k), lambda: kth)
    k_threshold = jnp.where(k_on, kth, -jnp.inf)  # [B]; -inf keeps every token
    x = jnp.where(x >= k_threshold[:, None], x, -jnp.inf)
    k_near = k_on & ~k_far
    p_threshold = jax.lax.cond(
        jnp.any(p_on),
        lambda: _nucleus_thresholds(x, candidates, k_threshold, k_near, top_p, p_on),
        lambda: jnp.full(top_p.shape, -jnp.inf),
    )
    return jnp.where(x >= p_threshold[:, None], x, -jnp.inf)


def _nucleus_thresholds(
    x: jax.Array,
    candidates: jax.Array,
    k_threshold: jax.Array,
    k_near: jax.Array,
    top_p: jax.Array,
    p_on: jax.Array,
) -> jax.Array:
    """Per row, the logit of the last token needed to reach top_p of the (top-k) survivors' mass;
    -inf for rows with top-p off. x: [B, V] after top-k; candidates: [B, C] descending, before top-k."""
    peak = candidates[:, 0]
    peak = jnp.where(jnp.isfinite(peak), peak, 0.0)  # a row with every token removed has no mass
    weight = jnp.exp(x - peak[:, None])  # [B, V]: probabilities up to one factor per row
    target = top_p * jnp.sum(weight, axis=-1)  # [B]
    surviving = candidates >= k_threshold[:, None]
    mass = jnp.cumsum(jnp.where(surviving, jnp.exp(candidates - peak[:, None]), 0.0), axis=-1)  # [B, C]
    reached = mass >= target[:, None]
    found = jnp.any(reached, axis=-1)
    fast = jnp.take_along_axis(candidates, jnp.argmax(reached, axis=-1)[:, None], axis=-1)[:, 0]
    # With k <= C, every survivor outside the candidates ties with the k-th logit, so a nucleus that
    # the candidates do not complete ends at that logit.
    fast = jnp.where(found | ~k_near, fast, k_threshold)
    search = p_on & ~found & ~k_near
    threshold = jax.lax.cond(
        jnp.any(search),
        lambda: _rows_where(search, fast, nucleus_threshold, x, weight, target),
        lambda: fast,
    )
    return jnp.where(p_on, threshold, -jnp.inf)


def _rows_where(
    need: jax.Array, default: jax.Array, row_fn: Callable[..., jax.Array], *row_args: jax.Array
) -> jax.Array:
    """row_fn(*row i of row_args) where need[i], default[i] elsewhere; one row at a time (lax.map) so
    each row's repeated passes stay in cache, and a real per-row branch skips the rows that need none."""

    def one(args: tuple[jax.Array, ...]) -> jax.Array:
        need_i, default_i, *rest = args
        return jax.lax.cond(need_i, lambda: row_fn(*rest).astype(default_i.dtype), lambda: default_i)

    return jax.lax.map(one, (need, default, *row_args))
