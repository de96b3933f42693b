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
    scheduling_policy: str  # "fcfs" or "priority" (only then may a request's priority be non-zero)

    def generate(
        self,
        request_id: str,
        prompt_token_ids: list[int],
        params: SamplingParams,
        *,
        priority: int = 0,
        cache_salt: str | None = None,
    ) -> AsyncIterator[RequestOutput]:
        """Queue a request; yield its outputs until one has finished=True.

        `priority`: lower runs first under the "priority" policy (vLLM's convention); must be 0 under
        "fcfs". `cache_salt`: prefix-cache entries are shared only between requests with the same salt.

        Raises InvalidRequest before yielding if the prompt does not fit the context window.
        Closing the iterator early (client gone) aborts the request and frees its resources.
        """
        ...

    def is_healthy(self) -> bool:
        """False once the engine loop has died and cannot serve any more."""
        ...
