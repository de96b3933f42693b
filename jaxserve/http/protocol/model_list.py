"""`GET /v1/models` objects (not in the chat spec; shaped like OpenAI's list plus vLLM's extras)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from jaxserve.http.protocol.base import ProtocolModel


class ModelCard(ProtocolModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "jaxserve"
    root: str | None = None
    parent: str | None = None
    max_model_len: int | None = None


class ModelList(ProtocolModel):
    object: Literal["list"] = "list"
    data: list[ModelCard] = Field(default_factory=list)
