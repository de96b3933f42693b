"""`jaxserve serve` flags reach the server options (without starting a server)."""

from __future__ import annotations

from typing import Any

import pytest

from jaxserve import cli, server
from jaxserve.http.parser_settings import ParserSettings


def served_options(monkeypatch: pytest.MonkeyPatch, *args: str) -> tuple[int, Any]:
    captured: list[Any] = []
    monkeypatch.setattr(server, "run_server", lambda options, started: captured.append(options) or 0)
    status = cli.main(["serve", *args])
    return status, captured[0] if captured else None


def test_parser_flags_become_parser_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    status, options = served_options(
        monkeypatch,
        "--enable-auto-tool-choice",
        "--tool-call-parser",
        "hermes",
        "--reasoning-parser",
        "qwen3",
        "--exclude-tools-when-tool-choice-none",
    )
    assert status == 0
    assert options.parsers == ParserSettings(
        tool_call_parser="hermes",
        enable_auto_tool_choice=True,
        exclude_tools_when_tool_choice_none=True,
        reasoning_parser="qwen3",
    )


def test_defaults_parse_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    status, options = served_options(monkeypatch)
    assert status == 0 and options.parsers == ParserSettings()


def test_auto_tool_choice_without_a_parser_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    status, options = served_options(monkeypatch, "--enable-auto-tool-choice")
    assert status == 2 and options is None


def test_unknown_parser_names_are_refused_by_argparse() -> None:
    with pytest.raises(SystemExit):
        cli.main(["serve", "--tool-call-parser", "pythonic"])


def test_request_timeout_reaches_the_server_options(monkeypatch: pytest.MonkeyPatch) -> None:
    assert served_options(monkeypatch)[1].request_timeout is None
    status, options = served_options(monkeypatch, "--request-timeout", "2.5")
    assert status == 0 and options.request_timeout == 2.5


def test_a_non_positive_request_timeout_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    status, options = served_options(monkeypatch, "--request-timeout", "0")
    assert status == 2 and options is None


def test_quantization_reaches_the_server_options(monkeypatch: pytest.MonkeyPatch) -> None:
    assert served_options(monkeypatch)[1].quantization is None
    status, options = served_options(monkeypatch, "--quantization", "int8", "--dtype", "bfloat16")
    assert status == 0 and options.quantization == "int8" and options.dtype == "bfloat16"


def test_unknown_quantization_is_refused_by_argparse() -> None:
    with pytest.raises(SystemExit):
        cli.main(["serve", "--quantization", "int4"])
