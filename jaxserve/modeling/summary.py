"""What a checkpoint is, without loading its weights: the resolved config, parameter count, memory needs
and chat template (`jaxserve inspect`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import numpy as np
from flax import nnx

from jaxserve.modeling.checkpoint import GGUFCheckpoint, open_checkpoint
from jaxserve.modeling.decoder import Decoder
from jaxserve.modeling.kv_cache import page_bytes
from jaxserve.modeling.loader import DTYPES, default_dtype, resolve_max_model_len
from jaxserve.modeling.quantization import resolve_quantization
from jaxserve.modeling.tokenizer import Tokenizer


@dataclass(frozen=True)
class ModelSummary:
    """The facts `jaxserve inspect` prints; `weight_bytes` is the dequantised in-memory size in `dtype`, or
    with `quantization` the size of the int8 kernels, their float32 scales and the float rest."""

    path: str
    source_format: str
    file_bytes: int
    config: dict[str, Any]
    parameter_count: int
    platform: str
    dtype: str
    quantization: str | None
    weight_bytes: int
    kv_bytes_per_token: int
    max_model_len: int
    kv_bytes_max_model_len: int
    chat_template: str | None

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def summarize(
    path: Path, dtype: str | None = None, max_model_len: int | None = None, quantization: str | None = None
) -> ModelSummary:
    """Open a GGUF file or HF directory and describe it; only metadata and shapes are read."""
    checkpoint = open_checkpoint(path)
    cfg = checkpoint.config
    dtype_name = dtype or default_dtype()
    jdtype = DTYPES[dtype_name]
    abstract = nnx.eval_shape(lambda: Decoder(cfg, dtype=jdtype))
    shapes = [variable.shape for _, variable in nnx.to_flat_state(nnx.state(abstract))]
    parameter_count = sum(int(np.prod(shape)) for shape in shapes)
    # Sized from the model as it would be built (a quantized tied model holds an extra int8 LM head).
    built = nnx.eval_shape(
        lambda: Decoder(cfg, dtype=jdtype, quantization=resolve_quantization(quantization))
    )
    weight_bytes = sum(
        int(np.prod(v.shape)) * np.dtype(v.dtype).itemsize for _, v in nnx.to_flat_state(nnx.state(built))
    )
    if isinstance(checkpoint, GGUFCheckpoint):
        tokenizer = Tokenizer.from_gguf_metadata(checkpoint.metadata, source=str(path))
        file_bytes = path.stat().st_size
    else:
        tokenizer = Tokenizer.from_path(path)
        file_bytes = sum(f.stat().st_size for f in path.glob("*.safetensors"))
    context = resolve_max_model_len(cfg, max_model_len)
    # The paged pool stores every layer's keys and values for every token, window or not (pages that
    # slide out of a local layer's window are not freed yet), so this is also what Gemma 3 uses.
    per_token = page_bytes(cfg, 1, jdtype)
    return ModelSummary(
        path=str(path),
        source_format=checkpoint.format,
        file_bytes=file_bytes,
        config=dataclasses.asdict(cfg),
        parameter_count=parameter_count,
        platform=jax.default_backend(),
        dtype=dtype_name,
        quantization=quantization,
        weight_bytes=weight_bytes,
        kv_bytes_per_token=per_token,
        max_model_len=context,
        kv_bytes_max_model_len=per_token * context,
        chat_template=tokenizer.chat_template,
    )


def format_summary(summary: ModelSummary) -> str:
    """Human-readable report: one `name: value` line per fact, the config flattened, the template last."""
    lines = [
        f"model: {summary.path} ({summary.source_format}, {_size(summary.file_bytes)} on disk)",
        "config:",
        *(f"  {name}: {value}" for name, value in _flatten(summary.config)),
        f"parameters: {summary.parameter_count:,} ({summary.parameter_count / 1e6:.1f}M)",
        f"dtype: {summary.dtype} (default on {summary.platform})",
        f"weight memory: {_size(summary.weight_bytes)} ({_weight_format(summary)})",
        f"KV cache per token: {_size(summary.kv_bytes_per_token)} ({summary.kv_bytes_per_token:,} bytes)",
        f"KV cache for max_model_len {summary.max_model_len}: {_size(summary.kv_bytes_max_model_len)}",
        "chat template:" + (" none" if summary.chat_template is None else ""),
    ]
    if summary.chat_template is not None:
        lines.append(summary.chat_template)
    return "\n".join(lines)


def _weight_format(summary: ModelSummary) -> str:
    if summary.quantization is None:
        return f"dequantised, {summary.dtype}"
    return f"{summary.quantization} projections with float32 scales, the rest {summary.dtype}"


def _flatten(config: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for name, value in config.items():
        if isinstance(value, dict):
            out += _flatten(value, f"{prefix}{name}.")
        else:
            out.append((f"{prefix}{name}", value))
    return out


def _size(num_bytes: int) -> str:
    """Bytes in binary units (KiB, MiB, GiB); plain bytes below 1 KiB."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if num_bytes >= scale:
            return f"{num_bytes / scale:.2f} {unit}"
    return f"{num_bytes} B"
