"""The Llama-family decoder as Flax NNX modules: Llama 2/3, SmolLM2, Mistral, Qwen2, Qwen3.

Dimension letters used in shapes and einsum specs:
  B batch rows, T tokens per row in this step, S cached key positions read, D model width,
  N query heads, K key/value heads, G query heads per KV head (N // K), H head width,
  F MLP hidden width, V vocabulary.

Weights are stored as 2-D [in, out] kernels so every projection is one `x @ W`; per-head views are
reshapes. Each parameter carries its logical axis names next to its creation; a rules table elsewhere
maps them onto a device mesh.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from jaxserve.modeling.attention import paged_attention
from jaxserve.modeling.config import ModelConfig
from jaxserve.modeling.kv_cache import PagedKVCache, write_pages
from jaxserve.modeling.rope import apply_rotary, inverse_frequencies


def _param(
    rngs: nnx.Rngs | None, shape: tuple[int, ...], axes: tuple[str, ...], dtype: jnp.dtype, init: str
) -> nnx.Param:
    """One weight with its logical axes. Without rngs, "normal" weights start at zero: the model is then
    a shell for a loader (built under eval_shape, where a random init only costs tracing time)."""
    if init == "ones":
        value = jnp.ones(shape, dtype)
    elif init == "zeros" or rngs is None:
        value = jnp.zeros(shape, dtype)
    else:  # small normal, like HF's initializer_range: for random-weight models
        value = (0.02 * jax.random.normal(rngs.params(), shape)).astype(dtype)
    return nnx.Param(value, logical_axes=axes)


class RMSNorm(nnx.Module):
    """Root-mean-square layer norm, computed in float32 as the reference implementations do."""

    def __init__(self, width: int, eps: float, axis_name: str, *, dtype: jnp.dtype, rngs: nnx.Rngs | None):
        self.weight = _param(rngs, (width,), (axis_name,), dtype, "ones")
        self.eps = eps

    def __call__(self, x: jax.Array) -> jax.Array:
        x32 = x.astype(jnp.float32)
        normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
        return (normed.astype(x.dtype) * self.weight[...]).astype(x.dtype)


class Attention(nnx.Module):
    """Grouped-query self-attention over the new tokens plus the cached prefix."""

    def __init__(self, cfg: ModelConfig, *, dtype: jnp.dtype, rngs: nnx.Rngs | None):
        d = cfg.hidden_size
        self.q_proj = _param(rngs, (d, cfg.q_size), ("embed", "q_heads"), dtype, "normal")
        self.k_proj = _param(rngs, (d, cfg.kv_size), ("embed", "kv_heads"), dtype, "normal")
        self.v_proj = _param(rngs, (d, cfg.kv_size), ("embed", "kv_heads"), dtype, "normal")
        self.o_proj = _param(rngs, (cfg.q_size, d), ("q_heads", "embed"), dtype, "normal")
        if cfg.attention_bias:
            self.q_bias = _param(rngs, (cfg.q_size,), ("q_heads",), dtype, "zeros")
            self.k_bias = _param(rngs, (cfg.kv_size,), ("kv_heads",), dtype, "zeros")
            self.v_bias = _param(rngs, (cfg.kv_size,), ("kv_heads",), dtype, "zeros")
        if cfg.qk_norm:
            self.q_norm = RMSNorm(cfg.head_dim, cfg.rms_norm_eps, "head_dim", dtype=dtype, rngs=rngs)
            self.k_norm = RMSNorm(cfg.head_dim, cfg.rms_norm_eps, "head_dim", dtype=dtype, rngs=rngs)
        self.cfg = cfg

    def __call__(
        self,
        x: jax.Array,
        positions: jax.Array,
        layer_cache: tuple[jax.Array, jax.Array],
        block_tables: jax.Array,
        inv_freq: jax.Array,
    ) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
        """x: [B, T, D]; positions: [B, T]; row b's cache pages are block_tables[b]. Returns [B, T, D], cache."""
        cfg = self.cfg
        b, t, _ = x.shape
        q = x @ self.q_proj[...]
        k = x @ self.k_proj[...]
        v = x @ self.v_proj[...]
        if cfg.attention_bias:
            q = q + self.q_bias[...]
            k = k + self.k_bias[...]
            v = v + self.v_bias[...]
        q = q.reshape(b, t, cfg.num_heads, cfg.head_dim)
        k = k.reshape(b, t, cfg.num_kv_heads, cfg.head_dim)
        v = v.reshape(b, t, cfg.num_kv_heads, cfg.head_dim)
        if cfg.qk_norm:
            q = self.q_norm(q)
            k = self.k_norm(k)
        q = apply_rotary(q, positions, inv_freq)
        k = apply_rotary(k, positions, inv_freq)

        layer_cache = write_pages(layer_cache, k, v, block_tables, positions)
        groups = cfg.num_heads // cfg.num_kv_heads
        q = q.reshape(b, t, cfg.num_kv_heads, groups, cfg.head_dim)
        out = paged_attention(q, layer_cache, block_tables, positions, cfg.sliding_window)
        out = out.reshape(b, t, cfg.q_size)
        return out @ self.o_proj[...], layer_cache


class MLP(nnx.Module):
    """SwiGLU feed-forward block: down(silu(gate(x)) * up(x))."""

    def __init__(self, cfg: ModelConfig, *, dtype: jnp.dtype, rngs: nnx.Rngs | None):
        d, f = cfg.hidden_size, cfg.intermediate_size
        self.gate_proj = _param(rngs, (d, f), ("embed", "mlp"), dtype, "normal")
        self.up_proj = _param(rngs, (d, f), ("embed", "mlp"), dtype, "normal")
        self.down_proj = _param(rngs, (f, d), ("mlp", "embed"), dtype, "normal")

    def __call__(self, x: jax.Array) -> jax.Array:
        return (jax.nn.silu(x @ self.gate_proj[...]) * (x @ self.up_proj[...])) @ self.down_proj[...]


class DecoderLayer(nnx.Module):
    """Pre-norm transformer block: x + attn(norm(x)), then + mlp(norm(x))."""

    def __init__(self, cfg: ModelConfig, *, dtype: jnp.dtype, rngs: nnx.Rngs | None):
        self.input_norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, "embed", dtype=dtype, rngs=rngs)
        self.attn = Attention(cfg, dtype=dtype, rngs=rngs)
        self.post_attention_norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, "embed", dtype=dtype, rngs=rngs)
        self.mlp = MLP(cfg, dtype=dtype, rngs=rngs)

    def __call__(
        self,
        x: jax.Array,
        positions: jax.Array,
        layer_cache: tuple[jax.Array, jax.Array],
        block_tables: jax.Array,
        inv_freq: jax.Array,
    ) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
        attn_out, layer_cache = self.attn(self.input_norm(x), positions, layer_cache, block_tables, inv_freq)
        x = x + attn_out
        x = x + self.mlp(self.post_attention_norm(x))
        return x, layer_cache


class Decoder(nnx.Module):
    """Token embeddings, the layer stack, the final norm and the LM head."""

    def __init__(self, cfg: ModelConfig, *, dtype: jnp.dtype = jnp.float32, rngs: nnx.Rngs | None = None):
        self.cfg = cfg
        self.embedding = _param(rngs, (cfg.vocab_size, cfg.hidden_size), ("vocab", "embed"), dtype, "normal")
        # A Python list of layers (unrolled at trace time) rather than a scan over stacked weights:
        # measured ~20% faster per decode step on XLA:CPU, and each layer's cache stays its own buffer.
        self.layers = nnx.List([DecoderLayer(cfg, dtype=dtype, rngs=rngs) for _ in range(cfg.num_layers)])
        self.final_norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, "embed", dtype=dtype, rngs=rngs)
        if not cfg.tie_word_embeddings:
            self.lm_head = _param(
                rngs, (cfg.hidden_size, cfg.vocab_size), ("embed", "vocab"), dtype, "normal"
            )

    def __call__(
        self,
        tokens: jax.Array,
        positions: jax.Array,
        cache: PagedKVCache,
        block_tables: jax.Array,
    ) -> tuple[jax.Array, PagedKVCache]:
        """tokens, positions: [B, T] int32; block_tables: [B, P] int32. Returns final hidden states [B, T, D].

        Row b reads and writes the cache pages block_tables[b], which must cover every position of the
        row; tokens at positions past the table's span (padding) are computed but never stored.
        """
        x = jnp.take(self.embedding[...], tokens, axis=0)
        # A trace-time constant: derived from the config, so it is not a weight to load or shard.
        inv_freq = jnp.asarray(inverse_frequencies(self.cfg.rope, self.cfg.head_dim))
        new_layers = []
        for layer, layer_cache in zip(self.layers, cache.layers, strict=True):
            x, layer_cache = layer(x, positions, layer_cache, block_tables, inv_freq)
            new_layers.append(layer_cache)
        return self.final_norm(x), PagedKVCache(layers=tuple(new_layers))

    def logits(self, hidden: jax.Array) -> jax.Array:
        """hidden: [..., D] -> logits [..., V] in float32."""
        if self.cfg.tie_word_embeddings:
            out = jnp.einsum("...d,vd->...v", hidden, self.embedding[...], preferred_element_type=jnp.float32)
        else:
            out = jnp.einsum("...d,dv->...v", hidden, self.lm_head[...], preferred_element_type=jnp.float32)
        return out.astype(jnp.float32)
