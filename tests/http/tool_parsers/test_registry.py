"""--tool-call-parser names."""

from __future__ import annotations

import pytest

from jaxserve.http.tool_parsers.registry import TOOL_PARSERS, tool_parser


def test_vllm_names_are_registered() -> None:
    assert sorted(TOOL_PARSERS) == ["hermes", "llama3_json", "mistral"]


def test_unknown_name_lists_the_choices() -> None:
    with pytest.raises(ValueError, match="hermes, llama3_json, mistral"):
        tool_parser("pythonic")
