"""Per-request sampling parameters, validated on the host before any device work.

Ranges and normalisations follow vLLM's `SamplingParams` (the reference for every extra field) and the
OpenAI API for the standard ones; each failure is an `InvalidRequest` naming the request field.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from jaxserve.errors import InvalidRequest

if TYPE_CHECKING:
    from jaxserve.sampling.structured import CompiledGrammar

GREEDY_TEMPERATURE = 1e-5
"""Temperatures below this are greedy (vLLM's `_SAMPLING_EPS`)."""

MIN_TEMPERATURE = 1e-2
"""Sampling temperatures in [GREEDY_TEMPERATURE, MIN_TEMPERATURE) are raised to this, as vLLM does
(its `_MAX_TEMP`): dividing logits by a tiny temperature drives softmax to inf/nan in low precision."""

MAX_TEMPERATURE = 2.0
"""OpenAI's documented range is [0, 2]; vLLM refuses values above it too."""

MAX_LOGPROBS = 20
"""Top logprobs per token (vLLM's default `max_logprobs`, OpenAI's `top_logprobs` limit)."""

LOGIT_BIAS_LIMIT = 100.0
"""Biases are clamped to [-100, 100] (OpenAI's range; vLLM clamps rather than refuses)."""


@dataclass(frozen=True)
class SamplingParams:
    """What one request asks of the sampler and the stop logic (vLLM semantics).

    max_tokens=None means "up to the end of the context window". temperature below 1e-5 is exact greedy
    argmax; top_k 0 (or -1, normalised to 0) keeps every token; logprobs / prompt_logprobs None mean
    "not requested", an integer the number of top alternatives to return besides the chosen token.
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
    n: int = 1
    min_tokens: int = 0
    top_k: int = 0
    min_p: float = 0.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    # A dict cannot be hashed; equality still compares it.
    logit_bias: Mapping[int, float] = field(default_factory=dict, hash=False)
    allowed_token_ids: tuple[int, ...] | None = None
    bad_words: tuple[str, ...] = ()
    logprobs: int | None = None
    prompt_logprobs: int | None = None
    spaces_between_special_tokens: bool = True
    extra: dict[str, object] = field(default_factory=dict, compare=False)
    # A compiled structured-output grammar (response_format, structured_outputs, forced tool_choice);
    # each sequence matches its own copy.
    structured: CompiledGrammar | None = field(default=None, compare=False, hash=False)

    def __post_init__(self) -> None:
        self._normalise()
        self._check_lengths()
        self._check_sampling()
        self._check_penalties()
        self._check_token_fields()
        self._check_logprobs()
        if self.greedy and self.n > 1:
            raise InvalidRequest(f"n must be 1 when using greedy sampling, got {self.n}", param="n")

    def _set(self, **values: object) -> None:
        for name, value in values.items():
            object.__setattr__(self, name, value)

    def _normalise(self) -> None:
        """vLLM's quiet rewrites: top_k -1 is "off", seed -1 is "no seed", tiny temperatures are raised,
        logit biases are clamped; sequences become tuples so the params stay immutable."""
        if self.top_k == -1:
            self._set(top_k=0)
        if self.seed == -1:
            self._set(seed=None)
        if GREEDY_TEMPERATURE <= self.temperature < MIN_TEMPERATURE:
            self._set(temperature=MIN_TEMPERATURE)
        self._set(
            stop=tuple(self.stop),
            stop_token_ids=tuple(self.stop_token_ids),
            bad_words=tuple(self.bad_words),
            logit_bias=_clamped_logit_bias(self.logit_bias),
        )
        if self.allowed_token_ids is not None:
            self._set(allowed_token_ids=tuple(self.allowed_token_ids))

    def _check_lengths(self) -> None:
        if not isinstance(self.n, int) or self.n < 1:
            raise InvalidRequest(f"n must be at least 1, got {self.n}", param="n")
        if self.max_tokens is not None and self.max_tokens < 1:
            raise InvalidRequest(f"max_tokens must be at least 1, got {self.max_tokens}", param="max_tokens")
        if self.min_tokens < 0:
            raise InvalidRequest(
                f"min_tokens must be non-negative, got {self.min_tokens}", param="min_tokens"
            )
        if self.max_tokens is not None and self.min_tokens > self.max_tokens:
            raise InvalidRequest(
                f"min_tokens must be less than or equal to max_tokens={self.max_tokens}, "
                f"got {self.min_tokens}",
                param="min_tokens",
            )
        if any(not s for s in self.stop):
            raise InvalidRequest("stop strings must be non-empty", param="stop")

    def _check_sampling(self) -> None:
        if not math.isfinite(self.temperature) or self.temperature < 0.0:
            raise InvalidRequest(
                f"temperature must be a non-negative number, got {self.temperature}", param="temperature"
            )
        if self.temperature > MAX_TEMPERATURE:
            raise InvalidRequest(
                f"temperature must be in [0, {MAX_TEMPERATURE}], got {self.temperature}", param="temperature"
            )
        if not 0.0 < self.top_p <= 1.0:
            raise InvalidRequest(f"top_p must be in (0, 1], got {self.top_p}", param="top_p")
        if not isinstance(self.top_k, int) or self.top_k < 0:
            raise InvalidRequest(
                f"top_k must be 0 or -1 (disabled) or at least 1, got {self.top_k}", param="top_k"
            )
        if not 0.0 <= self.min_p <= 1.0:
            raise InvalidRequest(f"min_p must be in [0, 1], got {self.min_p}", param="min_p")

    def _check_penalties(self) -> None:
        for name in ("presence_penalty", "frequency_penalty"):
            value = getattr(self, name)
            if not -2.0 <= value <= 2.0:
                raise InvalidRequest(f"{name} must be in [-2, 2], got {value}", param=name)
        if not math.isfinite(self.repetition_penalty) or self.repetition_penalty <= 0.0:
            raise InvalidRequest(
                "repetition_penalty must be a finite number greater than zero, "
                f"got {self.repetition_penalty}",
                param="repetition_penalty",
            )

    def _check_token_fields(self) -> None:
        if self.allowed_token_ids is not None and not self.allowed_token_ids:
            raise InvalidRequest("allowed_token_ids must not be empty", param="allowed_token_ids")
        if any(not word for word in self.bad_words):
            raise InvalidRequest("bad_words must not contain an empty string", param="bad_words")

    def _check_logprobs(self) -> None:
        for name in ("logprobs", "prompt_logprobs"):
            value = getattr(self, name)
            if value is not None and not 0 <= value <= MAX_LOGPROBS:
                raise InvalidRequest(f"{name} must be between 0 and {MAX_LOGPROBS}, got {value}", param=name)

    def validate_for_vocab(self, vocab_size: int) -> None:
        """Token ids the request names must exist in the model's vocabulary (vLLM checks the same
        fields once the model is known)."""
        for name, ids in (
            ("logit_bias", tuple(self.logit_bias)),
            ("allowed_token_ids", self.allowed_token_ids or ()),
            ("stop_token_ids", self.stop_token_ids),
        ):
            bad = [t for t in ids if not 0 <= t < vocab_size]
            if bad:
                raise InvalidRequest(
                    f"token_id(s) {bad} in {name} contain out-of-vocab token ids. "
                    f"Vocabulary size: {vocab_size}",
                    param=name,
                )

    @property
    def greedy(self) -> bool:
        return self.temperature < GREEDY_TEMPERATURE


def _clamped_logit_bias(logit_bias: Mapping[int, float] | Iterable[tuple[int, float]]) -> dict[int, float]:
    """Integer token ids (JSON object keys arrive as strings) to biases clamped to the allowed range."""
    items = logit_bias.items() if isinstance(logit_bias, Mapping) else logit_bias
    clamped: dict[int, float] = {}
    for key, value in items:
        try:
            token_id = int(key)
        except (TypeError, ValueError):
            raise InvalidRequest(
                f"logit_bias keys must be integer token ids, got {key!r}", param="logit_bias"
            ) from None
        try:
            bias = float(value)
        except (TypeError, ValueError):
            bias = math.nan
        if math.isnan(bias):
            raise InvalidRequest(f"logit_bias for token {token_id} is not a number", param="logit_bias")
        clamped[token_id] = min(LOGIT_BIAS_LIMIT, max(-LOGIT_BIAS_LIMIT, bias))
    return clamped
