"""The engine's face towards the HTTP layer: what a route may call, nothing more."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

from jaxserve.engine.outputs import RequestOutput
from jaxserve.modeling.tokenizer import Tokenizer
from jaxserve.sampling.params import SamplingParams


class EngineClient(Protocol):
    """Implemented by jaxserve.engine.async_engine.AsyncEngine."""

    tokenizer: Tokenizer
    max_model_len: int

    def generate(
        self, request_id: str, prompt_token_ids: list[int], params: SamplingParams
    ) -> AsyncIterator[RequestOutput]:
        """Queue a request; yield its outputs until one has finished=True.

        Raises InvalidRequest before yielding if the prompt does not fit the context window.
        Closing the iterator early (client gone) aborts the request and frees its resources.
        """
        ...

    def is_healthy(self) -> bool:
        """False once the engine loop has died and cannot serve any more."""
        ...
