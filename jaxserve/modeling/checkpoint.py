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
from jaxserve.modeling.gguf_file import GGUFFile


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
        self.path = path
        self._file = GGUFFile(path)
        self.metadata = self._file.metadata
        divisors = None
        if "rope_freqs.weight" in self._file.tensors:
            divisors = tuple(float(x) for x in self.tensor("rope_freqs.weight").reshape(-1))
        self.config = ModelConfig.from_gguf(self.metadata, set(self._file.tensors), divisors)

    def names(self) -> set[str]:
        return set(self._file.tensors)

    def quant_type(self, name: str) -> str:
        """The stored type of one tensor, e.g. "Q4_K", "Q6_K", "F32"."""
        if name not in self._file.tensors:
            raise ModelLoadError(f"GGUF file has no tensor '{name}'")
        return self._file.type_name(name)

    def tensor(self, name: str) -> np.ndarray:
        """Dequantised to float32 (by `gguf.quants`, whatever the quant type) in torch layout ([out, in])."""
        if name not in self._file.tensors:
            raise ModelLoadError(f"GGUF file has no tensor '{name}'")
        return self._file.dequantize(name)


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
