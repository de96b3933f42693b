"""Session fixtures for the optional Gemma 3 270M GGUF: its file, checkpoint and tokenizer are read once
(reading the 262k-token vocabulary from GGUF metadata takes about a minute)."""

from __future__ import annotations

from pathlib import Path

import pytest

from jaxserve.modeling.checkpoint import GGUFCheckpoint
from jaxserve.modeling.tokenizer import Tokenizer
from tests.modeling.gemma3_gguf import GEMMA3_MISSING, gemma3_gguf_path


@pytest.fixture(scope="session")
def gemma3_checkpoint() -> GGUFCheckpoint:
    path: Path | None = gemma3_gguf_path()
    if path is None:
        pytest.skip(GEMMA3_MISSING)
    return GGUFCheckpoint(path)


@pytest.fixture(scope="session")
def gemma3_tokenizer(gemma3_checkpoint: GGUFCheckpoint) -> Tokenizer:
    return Tokenizer.from_gguf_metadata(gemma3_checkpoint.metadata, source=str(gemma3_checkpoint.path))
