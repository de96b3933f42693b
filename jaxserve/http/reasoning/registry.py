"""`--reasoning-parser` names -> how each starts a choice's splitter (vLLM's names)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

from jaxserve.http.reasoning.think import PromptThinking, ThinkStream, prompt_thinking


@dataclass(frozen=True)
class ReasoningParser:
    """A `<think>` parser; `assumes_open`: output that opens no block starts as reasoning anyway."""

    name: str
    assumes_open: bool

    def stream(self, prompt_text: str) -> ThinkStream:
        """A fresh splitter for one choice of a request whose rendered prompt (or its end) is given."""
        thinking = prompt_thinking(prompt_text)
        return ThinkStream(
            starts_in_reasoning=self.assumes_open or thinking is PromptThinking.OPEN,
            prompt_closed=thinking is PromptThinking.CLOSED,
        )


REASONING_PARSERS: Final[Mapping[str, ReasoningParser]] = MappingProxyType(
    {
        # DeepSeek-R1's templates may put <think> in the prompt, so its output can lack the opening tag:
        # as in vLLM, everything before </think> is reasoning (all of it when </think> never comes).
        "deepseek_r1": ReasoningParser("deepseek_r1", assumes_open=True),
        # Qwen3 writes <think> itself (or its template does, or closes the block when thinking is off).
        "qwen3": ReasoningParser("qwen3", assumes_open=False),
    }
)


def reasoning_parser(name: str) -> ReasoningParser:
    """The parser registered as `name` (ValueError naming the choices otherwise)."""
    try:
        return REASONING_PARSERS[name]
    except KeyError:
        choices = ", ".join(REASONING_PARSERS)
        raise ValueError(f"unknown reasoning parser {name!r}; choose one of {choices}") from None
