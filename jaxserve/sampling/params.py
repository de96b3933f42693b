"""Per-request sampling parameters, validated on the host before any device work."""

from __future__ import annotations

from dataclasses import dataclass, field

from jaxserve.errors import InvalidRequest


@dataclass(frozen=True)
class SamplingParams:
    """What one request asks of the sampler and the stop logic (vLLM semantics).

    max_tokens=None means "up to the end of the context window".
    temperature=0 means exact greedy argmax.
    """

    max_tokens: int | None = None
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    stop_token_ids: tuple[int, ...] = ()
    ignore_eos: bool = False
    include_stop_str_in_output: bool = False
    skip_special_tokens: bool = True
    extra: dict[str, object] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if self.max_tokens is not None and self.max_tokens < 1:
            raise InvalidRequest("max_tokens must be at least 1", param="max_tokens")
        if self.temperature < 0:
            raise InvalidRequest("temperature must be non-negative", param="temperature")
        if not 0.0 < self.top_p <= 1.0:
            raise InvalidRequest("top_p must be in (0, 1]", param="top_p")
        if any(not s for s in self.stop):
            raise InvalidRequest("stop strings must be non-empty", param="stop")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0
