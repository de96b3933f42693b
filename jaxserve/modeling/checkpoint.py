"""Readers for the two checkpoint formats: a Hugging Face directory (safetensors) and a GGUF file.

Each reader exposes the model config and `tensor(name) -> np.ndarray` by the format's own tensor names;
`jaxserve.modeling.loader` maps those onto decoder parameters.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from jaxserve.errors import ModelLoadError
from jaxserve.modeling.config import ModelConfig


class SafetensorsCheckpoint:
    """A Hugging Face checkpoint directory: config.json plus one or more *.safetensors files.

    Tensors are memory-mapped (safetensors' numpy backend), so nothing is read until it is asked for.
    """

    format = "hf"

    def __init__(self, directory: Path) -> None:
        from safetensors import safe_open

        self.path = directory
        config_path = directory / "config.json"
        if not config_path.is_file():
            raise ModelLoadError(f"{directory} has no config.json: not a Hugging Face checkpoint directory")
        files = sorted(directory.glob("*.safetensors"))
        if not files:
            raise ModelLoadError(f"{directory} has no *.safetensors weight files")
        self.hf_config: dict[str, Any] = json.loads(config_path.read_text())
        self.config = ModelConfig.from_hf_config(self.hf_config)
        self._handles = [safe_open(str(f), framework="numpy") for f in files]
        self._where: dict[str, Any] = {}
        for handle in self._handles:
            for name in handle.keys():
                self._where[name] = handle

    def names(self) -> set[str]:
        return set(self._where)

    def tensor(self, name: str) -> np.ndarray:
        if name not in self._where:
            raise ModelLoadError(f"checkpoint has no tensor '{name}'")
        return self._where[name].get_tensor(name)


class GGUFCheckpoint:
    """A llama.cpp GGUF file: metadata, tokenizer and (possibly quantised) tensors in one file."""

    format = "gguf"

    def __init__(self, path: Path) -> None:
        import gguf

        self.path = path
        try:
            self._reader = gguf.GGUFReader(str(path))
        except Exception as exc:  # the gguf package raises bare ValueErrors for foreign files
            raise ModelLoadError(f"{path} is not a readable GGUF file: {exc}") from exc
        self._tensors = {t.name: t for t in self._reader.tensors}
        self.metadata = gguf_metadata(self._reader)
        divisors = None
        if "rope_freqs.weight" in self._tensors:
            divisors = tuple(float(x) for x in self.tensor("rope_freqs.weight").reshape(-1))
        self.config = ModelConfig.from_gguf(self.metadata, set(self._tensors), divisors)

    def names(self) -> set[str]:
        return set(self._tensors)

    def tensor(self, name: str) -> np.ndarray:
        """Dequantised to float32 in torch layout ([out, in] for projections)."""
        import gguf

        if name not in self._tensors:
            raise ModelLoadError(f"GGUF file has no tensor '{name}'")
        t = self._tensors[name]
        data = gguf.quants.dequantize(t.data, t.tensor_type)
        return np.asarray(data, dtype=np.float32)


def gguf_metadata(reader: Any) -> dict[str, Any]:
    """All GGUF key/values decoded to Python values (strings, numbers, lists)."""
    out: dict[str, Any] = {}
    for key, field in reader.fields.items():
        if key.startswith("GGUF."):
            continue
        out[key] = field.contents()
    return out


def open_checkpoint(path: Path) -> SafetensorsCheckpoint | GGUFCheckpoint:
    """A GGUF file or a Hugging Face checkpoint directory, by what is on disk."""
    if not path.exists():
        raise ModelLoadError(f"model path {path} does not exist")
    if path.is_dir():
        return SafetensorsCheckpoint(path)
    with path.open("rb") as f:
        magic = f.read(4)
    if magic != b"GGUF":
        raise ModelLoadError(f"{path} is neither a GGUF file nor a checkpoint directory")
    return GGUFCheckpoint(path)
