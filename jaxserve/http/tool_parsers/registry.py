"""`--tool-call-parser` names -> parser classes (vLLM's names)."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

from jaxserve.http.tool_parsers.base import ToolCallStream
from jaxserve.http.tool_parsers.hermes import HermesToolStream
from jaxserve.http.tool_parsers.llama3_json import Llama3JsonToolStream
from jaxserve.http.tool_parsers.mistral import MistralToolStream

TOOL_PARSERS: Final[Mapping[str, type[ToolCallStream]]] = MappingProxyType(
    {
        "hermes": HermesToolStream,
        "llama3_json": Llama3JsonToolStream,
        "mistral": MistralToolStream,
    }
)


def tool_parser(name: str) -> type[ToolCallStream]:
    """The parser class registered as `name` (ValueError naming the choices otherwise)."""
    try:
        return TOOL_PARSERS[name]
    except KeyError:
        raise ValueError(
            f"unknown tool-call parser {name!r}; choose one of {', '.join(TOOL_PARSERS)}"
        ) from None
