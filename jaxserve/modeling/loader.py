"""Build a decoder from a checkpoint: abstract model first, then each weight straight into place."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from jaxserve.errors import ModelLoadError
from jaxserve.modeling.attention import AttentionImpl
from jaxserve.modeling.checkpoint import GGUFCheckpoint, SafetensorsCheckpoint, open_checkpoint
from jaxserve.modeling.config import ModelConfig
from jaxserve.modeling.decoder import Decoder
from jaxserve.modeling.quantization import Quantization, quantize_per_channel
from jaxserve.modeling.sharding import ParallelConfig, param_shardings, place
from jaxserve.modeling.weight_map import QUANTIZED_PARTS, apply_transform, source_for, stacked_parts

log = logging.getLogger(__name__)

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def default_dtype() -> str:
    """float32 on CPU (XLA:CPU bfloat16 matmuls are ~10x slower); bfloat16 on TPU and GPU."""
    return "float32" if jax.default_backend() == "cpu" else "bfloat16"


CPU_DEFAULT_MAX_MODEL_LEN = 2048
"""On CPU the whole-window KV cache and the per-bucket compile time both grow with the context, and
CPU serving is for small models and short chats; --max-model-len raises it."""


def resolve_max_model_len(cfg: ModelConfig, requested: int | None) -> int:
    """The context to serve: `requested` (at most the model's), else the model's, capped on CPU."""
    context = cfg.max_position_embeddings
    if requested is not None:
        if requested > context:
            raise ModelLoadError(f"--max-model-len {requested} exceeds the model's context {context}")
        return requested
    if jax.default_backend() == "cpu":
        return min(context, CPU_DEFAULT_MAX_MODEL_LEN)
    return context


@dataclass(frozen=True)
class LoadedModel:
    config: ModelConfig
    graphdef: nnx.GraphDef
    state: nnx.State
    dtype: jnp.dtype
    source_format: str
    load_seconds: float
    mesh: Mesh
    quantization: Quantization | None = None
    feature_major: bool = False  # float kernels stored [out, in] (see decoder.feature_major_matmul)


def load_model(
    source: str | Path | GGUFCheckpoint | SafetensorsCheckpoint,
    dtype: str | None = None,
    quantization: Quantization | None = None,
    mesh: Mesh | None = None,
    attention_impl: AttentionImpl = "auto",
    feature_major: bool | None = None,
) -> LoadedModel:
    """Load a GGUF file or Hugging Face checkpoint directory (a path, or one already opened) onto `mesh`
    (default: the first device), each weight straight into its shards.

    With `quantization` each projection's float tensor is quantized to int8 on the host and only the int8
    kernel and its scales are placed on the devices. `feature_major` stores float kernels [out, in] (see
    `jaxserve.modeling.decoder.feature_major_matmul`); by default it is on for a float model on a CPU mesh
    only, where it was measured."""
    start = time.perf_counter()
    if isinstance(source, GGUFCheckpoint | SafetensorsCheckpoint):
        checkpoint = source
    else:
        checkpoint = open_checkpoint(Path(source).expanduser())
    path = checkpoint.path
    cfg = checkpoint.config
    dtype_name = dtype or default_dtype()
    if dtype_name not in DTYPES:
        raise ModelLoadError(f"dtype '{dtype_name}' is not supported (supported: {', '.join(DTYPES)})")
    jdtype = DTYPES[dtype_name]

    mesh = mesh or ParallelConfig().build_mesh()
    if feature_major is None:  # an int8 model has no float kernels to lay out
        feature_major = quantization is None and mesh.devices.flat[0].platform == "cpu"
    abstract = nnx.eval_shape(
        lambda: Decoder(
            cfg,
            dtype=jdtype,
            quantization=quantization,
            attention_impl=attention_impl,
            feature_major=feature_major,
        )
    )
    graphdef, abstract_state = nnx.split(abstract)
    shardings = dict(nnx.to_flat_state(param_shardings(abstract_state, cfg, mesh)))
    flat = nnx.to_flat_state(abstract_state)
    available = checkpoint.names()
    loaded = []
    total = len(flat)
    # An int8 projection's kernel and scale are adjacent in the flat state and come from one tensor:
    # quantize it once for both (one entry, so at most one float tensor is held on the host).
    quantized: tuple[str, tuple[np.ndarray, np.ndarray]] | None = None

    def read(param_path: str) -> np.ndarray:
        """One parameter's tensor from the checkpoint, in the map's layout ([in, out] kernels)."""
        nonlocal quantized
        row, layer, part = source_for(param_path)
        name = row.hf_name if checkpoint.format == "hf" else row.gguf_name
        transform = row.hf_transform if checkpoint.format == "hf" else row.gguf_transform
        if layer is not None:
            name = name.replace("{i}", str(layer))
        if checkpoint.format == "hf" and name not in available and row.hf_alias is not None:
            name = row.hf_alias.replace("{i}", str(layer))
        if name not in available:
            raise ModelLoadError(f"checkpoint {path} lacks tensor '{name}' (needed for {param_path})")
        if part is None:
            return apply_transform(checkpoint.tensor(name), transform, cfg)
        if quantized is None or quantized[0] != name:
            quantized = (name, quantize_per_channel(apply_transform(checkpoint.tensor(name), transform, cfg)))
        return quantized[1][QUANTIZED_PARTS[part]]

    for index, (path_tuple, variable) in enumerate(flat):
        param_path = ".".join(str(p) for p in path_tuple)
        parts = stacked_parts(param_path)
        if parts is not None:  # feature-major: each part [in, out] -> [out, in], stacked
            array = np.stack([read(part).T for part in parts])
        else:
            array = read(param_path)
            if variable.get_metadata().get("feature_major"):
                array = array.T  # the map gives [in, out] kernels
        expected = tuple(variable.shape)
        if array.shape != expected:
            raise ModelLoadError(f"tensor of shape {array.shape}, expected {expected} for {param_path}")
        # The parameter's own dtype: the model dtype, or int8 / float32 for a quantized kernel / scale.
        value = place(np.ascontiguousarray(array, dtype=np.dtype(variable.dtype)), shardings[path_tuple])
        loaded.append((path_tuple, variable.replace(value)))
        if (index + 1) % 50 == 0 or index + 1 == total:
            log.info("loading weights: %d/%d tensors (%.1fs)", index + 1, total, time.perf_counter() - start)
    state = nnx.from_flat_state(loaded)
    seconds = time.perf_counter() - start
    # The checkpoint's parameters: a derived int8 head (tied embeddings) and the scales are not counted.
    n_params = sum(int(np.prod(v.shape)) for p, v in flat if p[0] != "tied_lm_head" and p[-1] != "scale")
    weight_bytes = sum(int(np.prod(v.shape)) * np.dtype(v.dtype).itemsize for _, v in flat)
    log.info(
        "loaded %s (%s, %d layers, %.1fM parameters, %s, %s, %.0f MiB of weights) in %.1fs",
        path.name,
        cfg.architecture,
        cfg.num_layers,
        n_params / 1e6,
        dtype_name,
        f"int8 {quantization.method}" if quantization else "not quantized",
        weight_bytes / 2**20,
        seconds,
    )
    return LoadedModel(
        cfg, graphdef, state, jdtype, checkpoint.format, seconds, mesh, quantization, feature_major
    )
