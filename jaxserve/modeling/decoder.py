"""The decoder as Flax NNX modules: Llama 2/3, SmolLM2, Mistral, Qwen2, Qwen3 and Gemma 3 (text).

Gemma 3 differs only through config fields: (1 + w) RMSNorm, embeddings scaled by sqrt(D), norms on the
attention and MLP outputs as well as their inputs ("sandwich" norms), GELU-tanh MLP, q/k norms, scores
scaled by query_pre_attn_scalar, and interleaved local (sliding-window, own rotary base) and global layers.

Dimension letters used in shapes and einsum specs:
  B batch rows, T tokens per row in this step, S cached key positions read, D model width,
  N query heads, K key/value heads, G query heads per KV head (N // K), H head width,
  F MLP hidden width, V vocabulary.

Weights are stored as 2-D [in, out] kernels so every projection is one `x @ W`, or, with `feature_major`
(the CPU default), float kernels as [out, in] (see `feature_major_matmul`), with the k/v and gate/up pairs
each stacked into one [2, out, in] kernel (one dot per pair); per-head views are reshapes.
Each parameter carries its logical axis names next to its creation; a rules table elsewhere maps them onto
a device mesh.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from jaxserve.modeling import native_matvec
from jaxserve.modeling.attention import ATTENTION_IMPLS, AttentionImpl, paged_attention
from jaxserve.modeling.config import ModelConfig
from jaxserve.modeling.kv_cache import PagedKVCache, write_pages
from jaxserve.modeling.quantization import Int8Projection, Quantization
from jaxserve.modeling.rope import RotaryAngles, apply_rotary, inverse_frequencies, rotary_angles


def _param(
    rngs: nnx.Rngs | None,
    shape: tuple[int, ...],
    axes: tuple[str, ...],
    dtype: jnp.dtype,
    init: str,
    **metadata: Any,
) -> nnx.Param:
    """One weight with its logical axes (and any further `metadata`). Without rngs, "normal" weights start
    at zero: the model is then a shell for a loader (built under eval_shape, where a random init only costs
    tracing time)."""
    if init == "ones":
        value = jnp.ones(shape, dtype)
    elif init == "zeros" or rngs is None:
        value = jnp.zeros(shape, dtype)
    else:  # small normal, like HF's initializer_range: for random-weight models
        value = (0.02 * jax.random.normal(rngs.params(), shape)).astype(dtype)
    return nnx.Param(value, logical_axes=axes, **metadata)


def _projection(
    rngs: nnx.Rngs | None,
    shape: tuple[int, int],
    axes: tuple[str, str],
    dtype: jnp.dtype,
    quantization: Quantization | None,
    feature_major: bool = False,
) -> nnx.Param | Int8Projection:
    """A linear projection of `shape` (in, out): an int8 kernel plus per-channel scales if quantized, else a
    float kernel, stored [in, out], or [out, in] with `feature_major` metadata set (the loader reads it)."""
    if quantization is not None:
        return Int8Projection(shape, axes, quantization, rngs)
    if feature_major:
        return _param(rngs, shape[::-1], axes[::-1], dtype, "normal", feature_major=True)
    return _param(rngs, shape, axes, dtype, "normal")


def _stacked_projection(
    rngs: nnx.Rngs | None,
    parts: int,
    shape: tuple[int, int],
    axes: tuple[str, str],
    dtype: jnp.dtype,
) -> nnx.Param:
    """`parts` feature-major projections of `shape` (in, out) that read the same input, stored as one
    [parts, out, in] kernel: one dot instead of `parts` (see MLP and Attention). The leading axis is never
    split across devices, so each part shards as its own projection would."""
    return _param(
        rngs, (parts, shape[1], shape[0]), ("stacked", axes[1], axes[0]), dtype, "normal", feature_major=True
    )


FEATURE_MAJOR_MAX_ROWS = 128
"""Up to this many rows `feature_major_matmul` multiplies kernel @ xᵀ; with more, x @ kernelᵀ directly."""

STACK_PROJECTIONS = True
"""Whether feature-major float models stack k/v and gate/up kernels (read when a model is built).
Runner steps, separate vs stacked (in-process ABBA, 2026-11-26): decode at batch 1 / 4 / 16 / 64 40.6 /
53.6 / 128.8 / 369.3 vs 39.1 / 51.8 / 126.6 / 356.6 ms; a 32-token prompt chunk 105.0 vs 105.5."""

MLP_THROUGH_MAX_ROWS = 128
"""Up to this many rows `feature_major_mlp` keeps the hidden activations [F, rows]; above, it is two
`feature_major_matmul` products.
One in-process ABBA put a 128-token prompt chunk at 316.8 ms this way and 303.7 ms the other (a 32-token
chunk 115.2 vs 117.4): within the machine's drift, so the limit stays at FEATURE_MAJOR_MAX_ROWS.
A second one (10 rounds, 2026-11-27) found no difference: 128-token chunks at positions 0 / 256 336.1 /
369.1 ms this way vs 336.3 / 367.0, a 32-token chunk 110.2 vs 111.8."""


def _stacks_pairs(feature_major: bool, quantization: Quantization | None) -> bool:
    """Whether a layer stores its k/v and gate/up kernels stacked: feature-major float models only."""
    return feature_major and quantization is None and STACK_PROJECTIONS


def feature_major_matmul(x: jax.Array, kernel: jax.Array, out_dtype: jnp.dtype | None = None) -> jax.Array:
    """x [..., in] times a kernel stored [*out, in] -> [..., *out] (out is one axis, or a stack's two).

    Up to native_matvec.MAX_ROWS float32 rows on one CPU device the native kernel computes it (see
    native_matvec). Otherwise, up to FEATURE_MAJOR_MAX_ROWS rows it computes kernel @ xᵀ. Why: XLA:CPU's
    dot libraries stream the big operand fastest when it is the dot's left side and the activations are a
    contiguous [in, rows] right side. A 30-layer stack of SmolLM2 MLP projections took 13.7 instead of
    19.5 ms at 4 rows, 21.7 instead of 29.8 at 16 and 47 instead of 52 at 64 this way, against x @ an
    [in, out] kernel (YNNPACK dots; a draft of `benchmarks/matmul_orientation.py`). The optimization
    barriers make both transposes real copies (small: rows x width): without them XLA folds them into the
    dot's dimension numbers and picks the slow kernel again (62 ms at 4 rows).
    Above the limit the copies cost more than the layout gains, and x @ kernelᵀ is as fast as row-major
    kernels. Runner prompt chunks (`benchmarks/dot_backends.py`), row-major vs this: 512 tokens 1397.8 vs
    1636.5 ms with kernel @ xᵀ, 1218.8 vs 1210.6 with x @ kernelᵀ; 128 tokens 313.8 vs 303.7 with
    kernel @ xᵀ, 334.3 vs 426.5 with x @ kernelᵀ.
    """
    lead, width = x.shape[:-1], x.shape[-1]
    out_dims, contract = kernel.shape[:-1], kernel.ndim - 1
    rows = x.reshape(-1, width)
    if native_matvec.supports(rows, kernel):  # up to native_matvec.MAX_ROWS float32 rows on one CPU device
        out = native_matvec.product(rows, kernel.reshape(-1, width))
    elif rows.shape[0] == 1:
        # One row is a matrix-vector product in either orientation, and its transposes are free
        # reshapes, so the barriers would only add two copy ops per projection (~420 per SmolLM2 decode
        # step): batch-1 steps took 38.7 instead of 40.2 ms without them.
        out = jax.lax.dot_general(
            kernel, rows, (((contract,), (1,)), ((), ())), preferred_element_type=out_dtype
        )
    elif rows.shape[0] > FEATURE_MAJOR_MAX_ROWS:  # a trace-time choice: shapes are static
        # A stack's kernel goes in as one [out, in] matrix (a free reshape): given the 3-D kernel, XLA
        # copied it transposed on every call, ~300 ms of a 4 x 128-token prompt step.
        out = jax.lax.dot_general(
            rows,
            kernel.reshape(-1, width),
            (((1,), (1,)), ((), ())),
            preferred_element_type=out_dtype,
        )
    else:
        columns = jax.lax.optimization_barrier(rows.T)  # [in, rows]
        out_t = jax.lax.dot_general(
            kernel, columns, (((contract,), (0,)), ((), ())), preferred_element_type=out_dtype
        )  # [*out, rows]
        out = jnp.moveaxis(jax.lax.optimization_barrier(out_t), -1, 0)
    return out.reshape(*lead, *out_dims).astype(out_dtype or x.dtype)


def feature_major_mlp(
    x: jax.Array, gate_up: jax.Array, down: jax.Array, act: Callable[[jax.Array], jax.Array]
) -> jax.Array:
    """down(act(gate(x)) * up(x)) for x [..., D] with feature-major kernels: gate_up [2, F, D] (gate
    stacked on up), down [D, F].

    From 2 to MLP_THROUGH_MAX_ROWS rows the hidden activations stay [F, rows] between the two dots, which
    is what the down projection's kernel @ hᵀ wants: one copy in and one out for the whole block instead
    of two per projection. Outside that range, and where the native kernel takes the rows, it is the two
    `feature_major_matmul` products (matrix-vector for one row, x contracted with the kernels as stored
    above FEATURE_MAJOR_MAX_ROWS).
    """
    lead, width = x.shape[:-1], x.shape[-1]
    rows = x.reshape(-1, width)
    if native_matvec.supports(rows, gate_up) or not 1 < rows.shape[0] <= MLP_THROUGH_MAX_ROWS:
        hidden = feature_major_matmul(x, gate_up)  # [..., 2, F]
        return feature_major_matmul(act(hidden[..., 0, :]) * hidden[..., 1, :], down)
    columns = jax.lax.optimization_barrier(rows.T)  # [D, rows]
    hidden = jax.lax.dot_general(gate_up, columns, (((2,), (0,)), ((), ())))  # [2, F, rows]
    out_t = jax.lax.dot_general(down, act(hidden[0]) * hidden[1], (((1,), (0,)), ((), ())))  # [D, rows]
    return jax.lax.optimization_barrier(out_t).T.reshape(*lead, down.shape[0])


def _project(
    x: jax.Array, weight: nnx.Param | Int8Projection, out_dtype: jnp.dtype | None = None
) -> jax.Array:
    """x [..., in] times the projection's kernel -> [..., out] in x's dtype (or `out_dtype`, accumulated
    in it)."""
    if isinstance(weight, Int8Projection):
        return weight(x, out_dtype=out_dtype)
    if weight.get_metadata().get("feature_major"):
        return feature_major_matmul(x, weight[...], out_dtype)
    if out_dtype is None:
        return x @ weight[...]
    return jnp.matmul(x, weight[...], preferred_element_type=out_dtype)


class RMSNorm(nnx.Module):
    """Root-mean-square layer norm, normalised in float32 as the reference implementations do.

    With `weight_offset` 0 (Llama) the scale is `w` applied in the input dtype; with an offset (Gemma) it is
    `offset + w` applied in float32 before casting back, exactly as each family's reference computes it
    (the two differ in bfloat16). Weights then start at zero, so a fresh norm is the identity either way.
    """

    def __init__(
        self,
        width: int,
        eps: float,
        axis_name: str,
        *,
        dtype: jnp.dtype,
        rngs: nnx.Rngs | None,
        weight_offset: float = 0.0,
    ):
        self.weight = _param(rngs, (width,), (axis_name,), dtype, "zeros" if weight_offset else "ones")
        self.eps = eps
        self.weight_offset = weight_offset

    def __call__(self, x: jax.Array) -> jax.Array:
        x32 = x.astype(jnp.float32)
        normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
        if self.weight_offset:
            return (normed * (self.weight_offset + self.weight[...].astype(jnp.float32))).astype(x.dtype)
        return (normed.astype(x.dtype) * self.weight[...]).astype(x.dtype)


def _norm(cfg: ModelConfig, width: int, axis_name: str, dtype: jnp.dtype, rngs: nnx.Rngs | None) -> RMSNorm:
    """An RMSNorm with the model's epsilon and weight convention."""
    return RMSNorm(
        width, cfg.rms_norm_eps, axis_name, dtype=dtype, rngs=rngs, weight_offset=cfg.norm_weight_offset
    )


class Attention(nnx.Module):
    """Grouped-query self-attention over the new tokens plus the cached prefix (within a window if the
    layer has one)."""

    def __init__(
        self,
        cfg: ModelConfig,
        sliding_window: int | None,
        *,
        dtype: jnp.dtype,
        rngs: nnx.Rngs | None,
        quantization: Quantization | None = None,
        attention_impl: AttentionImpl = "auto",
        feature_major: bool = False,
    ):
        if attention_impl not in ATTENTION_IMPLS:
            raise ValueError(f"attention_impl {attention_impl!r} is not one of {ATTENTION_IMPLS}")
        d, quant = cfg.hidden_size, quantization
        self.q_proj = _projection(rngs, (d, cfg.q_size), ("embed", "q_heads"), dtype, quant, feature_major)
        if _stacks_pairs(feature_major, quant):  # keys and values in one dot
            self.kv_proj = _stacked_projection(rngs, 2, (d, cfg.kv_size), ("embed", "kv_heads"), dtype)
        else:
            self.k_proj = _projection(
                rngs, (d, cfg.kv_size), ("embed", "kv_heads"), dtype, quant, feature_major
            )
            self.v_proj = _projection(
                rngs, (d, cfg.kv_size), ("embed", "kv_heads"), dtype, quant, feature_major
            )
        self.o_proj = _projection(rngs, (cfg.q_size, d), ("q_heads", "embed"), dtype, quant, feature_major)
        if cfg.attention_bias:
            self.q_bias = _param(rngs, (cfg.q_size,), ("q_heads",), dtype, "zeros")
            self.k_bias = _param(rngs, (cfg.kv_size,), ("kv_heads",), dtype, "zeros")
            self.v_bias = _param(rngs, (cfg.kv_size,), ("kv_heads",), dtype, "zeros")
        if cfg.qk_norm:
            self.q_norm = _norm(cfg, cfg.head_dim, "head_dim", dtype, rngs)
            self.k_norm = _norm(cfg, cfg.head_dim, "head_dim", dtype, rngs)
        self.cfg = cfg
        self.sliding_window = sliding_window
        self.attention_impl = attention_impl

    def __call__(
        self,
        x: jax.Array,
        positions: jax.Array,
        layer_cache: tuple[jax.Array, jax.Array],
        block_tables: jax.Array,
        angles: RotaryAngles,
    ) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
        """x: [B, T, D]; positions: [B, T] (rotated by `angles`); row b's cache pages are block_tables[b].
        Returns [B, T, D], cache."""
        cfg = self.cfg
        b, t, _ = x.shape
        q = _project(x, self.q_proj)
        if hasattr(self, "kv_proj"):
            kv = feature_major_matmul(x, self.kv_proj[...])  # [B, T, 2, K*H]
            k, v = kv[..., 0, :], kv[..., 1, :]
        else:
            k = _project(x, self.k_proj)
            v = _project(x, self.v_proj)
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
        q = apply_rotary(q, angles)
        k = apply_rotary(k, angles)

        layer_cache = write_pages(layer_cache, k, v, block_tables, positions)
        groups = cfg.num_heads // cfg.num_kv_heads
        q = q.reshape(b, t, cfg.num_kv_heads, groups, cfg.head_dim)
        out = paged_attention(
            q,
            layer_cache,
            block_tables,
            positions,
            self.sliding_window,
            scale=cfg.attention_scale,
            logit_softcap=cfg.attn_logit_softcap,
            impl=self.attention_impl,
        )
        out = out.reshape(b, t, cfg.q_size)
        return _project(out, self.o_proj), layer_cache


def _gelu_tanh(x: jax.Array) -> jax.Array:
    return jax.nn.gelu(x, approximate=True)  # transformers' gelu_pytorch_tanh


_ACTIVATIONS = {"silu": jax.nn.silu, "gelu_tanh": _gelu_tanh}


class MLP(nnx.Module):
    """Gated feed-forward block: down(act(gate(x)) * up(x)); SwiGLU with silu, GeGLU with gelu_tanh."""

    def __init__(
        self,
        cfg: ModelConfig,
        *,
        dtype: jnp.dtype,
        rngs: nnx.Rngs | None,
        quantization: Quantization | None = None,
        feature_major: bool = False,
    ):
        d, f, quant = cfg.hidden_size, cfg.intermediate_size, quantization
        if _stacks_pairs(feature_major, quant):  # gate and up in one dot
            self.gate_up_proj = _stacked_projection(rngs, 2, (d, f), ("embed", "mlp"), dtype)
        else:
            self.gate_proj = _projection(rngs, (d, f), ("embed", "mlp"), dtype, quant, feature_major)
            self.up_proj = _projection(rngs, (d, f), ("embed", "mlp"), dtype, quant, feature_major)
        self.down_proj = _projection(rngs, (f, d), ("mlp", "embed"), dtype, quant, feature_major)
        self.activation = cfg.mlp_activation

    def __call__(self, x: jax.Array) -> jax.Array:
        act = _ACTIVATIONS[self.activation]
        if hasattr(self, "gate_up_proj"):
            down = self.down_proj
            assert isinstance(down, nnx.Param)  # a float model's: only those stack gate and up
            return feature_major_mlp(x, self.gate_up_proj[...], down[...], act)
        return _project(act(_project(x, self.gate_proj)) * _project(x, self.up_proj), self.down_proj)


class DecoderLayer(nnx.Module):
    """Pre-norm transformer block: x + attn(norm(x)), then + mlp(norm(x)).

    With `post_norms` (Gemma) each sub-block's output is normed too before the residual add:
    x + norm(attn(norm(x))), then + norm(mlp(norm(x))).
    """

    def __init__(
        self,
        cfg: ModelConfig,
        layer: int,
        *,
        dtype: jnp.dtype,
        rngs: nnx.Rngs | None,
        quantization: Quantization | None = None,
        attention_impl: AttentionImpl = "auto",
        feature_major: bool = False,
    ):
        d = cfg.hidden_size
        self.input_norm = _norm(cfg, d, "embed", dtype, rngs)
        self.attn = Attention(
            cfg,
            cfg.layer_window(layer),
            dtype=dtype,
            rngs=rngs,
            quantization=quantization,
            attention_impl=attention_impl,
            feature_major=feature_major,
        )
        self.pre_mlp_norm = _norm(cfg, d, "embed", dtype, rngs)
        self.mlp = MLP(cfg, dtype=dtype, rngs=rngs, quantization=quantization, feature_major=feature_major)
        self.post_norms = cfg.post_norms
        if cfg.post_norms:
            self.post_attn_norm = _norm(cfg, d, "embed", dtype, rngs)
            self.post_mlp_norm = _norm(cfg, d, "embed", dtype, rngs)

    def __call__(
        self,
        x: jax.Array,
        positions: jax.Array,
        layer_cache: tuple[jax.Array, jax.Array],
        block_tables: jax.Array,
        angles: RotaryAngles,
    ) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
        attn_out, layer_cache = self.attn(self.input_norm(x), positions, layer_cache, block_tables, angles)
        if self.post_norms:
            x = x + self.post_attn_norm(attn_out)
            x = x + self.post_mlp_norm(self.mlp(self.pre_mlp_norm(x)))
        else:
            x = x + attn_out
            x = x + self.mlp(self.pre_mlp_norm(x))
        return x, layer_cache


class Decoder(nnx.Module):
    """Token embeddings, the layer stack, the final norm and the LM head.

    With `quantization` every linear projection, the LM head included, is an int8 kernel with per-channel
    scales. The embedding lookup stays float; a tied-embedding model then gets its own int8 LM head,
    `tied_lm_head`, which the loader derives from the embedding (for SmolLM2-135M the head is ~21% of the
    weights, so leaving it float would forfeit much of the saving).

    `attention_impl` picks the paged-attention implementation of every layer (see AttentionImpl); it is
    part of the graph definition, not a weight, so a loaded state merges into either choice.

    With `feature_major` every float projection kernel, the LM head included, is stored [out, in] and
    multiplied as `feature_major_matmul` does (the CPU default, chosen by the loader); int8 kernels keep
    [in, out], whose int8 x int8 dots are fastest row-major.
    """

    def __init__(
        self,
        cfg: ModelConfig,
        *,
        dtype: jnp.dtype = jnp.float32,
        rngs: nnx.Rngs | None = None,
        quantization: Quantization | None = None,
        attention_impl: AttentionImpl = "auto",
        feature_major: bool = False,
    ):
        self.cfg = cfg
        self.embedding = _param(rngs, (cfg.vocab_size, cfg.hidden_size), ("vocab", "embed"), dtype, "normal")
        # A Python list of layers (unrolled at trace time) rather than a scan over stacked weights:
        # measured ~20% faster per decode step on XLA:CPU, and each layer's cache stays its own buffer.
        self.layers = nnx.List(
            [
                DecoderLayer(
                    cfg,
                    i,
                    dtype=dtype,
                    rngs=rngs,
                    quantization=quantization,
                    attention_impl=attention_impl,
                    feature_major=feature_major,
                )
                for i in range(cfg.num_layers)
            ]
        )
        self.final_norm = _norm(cfg, cfg.hidden_size, "embed", dtype, rngs)
        head_shape, head_axes = (cfg.hidden_size, cfg.vocab_size), ("embed", "vocab")
        if not cfg.tie_word_embeddings:
            self.lm_head = _projection(rngs, head_shape, head_axes, dtype, quantization, feature_major)
        elif quantization is not None:
            self.tied_lm_head = Int8Projection(head_shape, head_axes, quantization, rngs)
        self.quantized_tied_head = cfg.tie_word_embeddings and quantization is not None
        self.feature_major = feature_major

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
        cfg = self.cfg
        embedding = self.embedding[...]
        x = jnp.take(embedding, tokens, axis=0)
        if cfg.embedding_scale != 1.0:
            # Gemma: scaled by sqrt(D) rounded to the model dtype first, as its reference does.
            x = x * jnp.asarray(cfg.embedding_scale, embedding.dtype)
        new_layers = []
        angles_by_rope: dict[object, RotaryAngles] = {}  # one per rotary configuration (Gemma 3 has two)
        for index, (layer, layer_cache) in enumerate(zip(self.layers, cache.layers, strict=True)):
            rope = cfg.layer_rope(index)
            if rope not in angles_by_rope:
                # Trace-time constants: derived from the config, so not weights to load or shard.
                angles_by_rope[rope] = rotary_angles(positions, inverse_frequencies(rope, cfg.head_dim))
            x, layer_cache = layer(x, positions, layer_cache, block_tables, angles_by_rope[rope])
            new_layers.append(layer_cache)
        return self.final_norm(x), PagedKVCache(layers=tuple(new_layers))

    def logits(self, hidden: jax.Array) -> jax.Array:
        """hidden: [..., D] -> logits [..., V] in float32."""
        if self.cfg.tie_word_embeddings and not self.quantized_tied_head:  # the float embedding [V, D]
            embedding = self.embedding[...]
            if self.feature_major:
                out = feature_major_matmul(hidden, embedding, jnp.float32)
            else:
                out = jnp.einsum("...d,vd->...v", hidden, embedding, preferred_element_type=jnp.float32)
        else:
            head = self.tied_lm_head if self.quantized_tied_head else self.lm_head
            out = _project(hidden, head, jnp.float32)
        out = out.astype(jnp.float32)
        if self.cfg.final_logit_softcap is not None:
            cap = self.cfg.final_logit_softcap
            out = jnp.tanh(out / cap) * cap  # squashed into (-cap, cap); the order of the logits is unchanged
        return out
