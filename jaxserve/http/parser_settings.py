"""Server-wide settings for reading structure out of generated text: tool calls and reasoning."""

from __future__ import annotations

from dataclasses import dataclass

from jaxserve.http.reasoning.registry import reasoning_parser
from jaxserve.http.tool_parsers.registry import tool_parser


@dataclass(frozen=True)
class ParserSettings:
    """`--tool-call-parser`, `--enable-auto-tool-choice`, `--exclude-tools-when-tool-choice-none` and
    `--reasoning-parser`, validated once (ValueError) as vLLM validates them at start-up."""

    tool_call_parser: str | None = None
    enable_auto_tool_choice: bool = False
    exclude_tools_when_tool_choice_none: bool = False
    reasoning_parser: str | None = None

    def __post_init__(self) -> None:
        if self.tool_call_parser is not None:
            tool_parser(self.tool_call_parser)
        if self.reasoning_parser is not None:
            reasoning_parser(self.reasoning_parser)
        if self.enable_auto_tool_choice and self.tool_call_parser is None:
            raise ValueError("--enable-auto-tool-choice requires --tool-call-parser")

    @property
    def auto_tool_choice(self) -> bool:
        """Whether `tool_choice: "auto"` is served (vLLM needs both flags)."""
        return self.enable_auto_tool_choice and self.tool_call_parser is not None
