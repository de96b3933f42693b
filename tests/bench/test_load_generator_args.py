"""The load generator's command line: where a run's request numbers (and so its prompts) start."""

from __future__ import annotations

import pytest

from jaxserve.bench.load_generator import LoadConfig, build_messages, parse_args


def test_first_request_sets_where_the_prompts_start() -> None:
    config = LoadConfig.from_args(parse_args(["--concurrency", "4", "--first-request", "17"]))
    assert config.first_request == 17
    assert LoadConfig.from_args(parse_args(["--concurrency", "4"])).first_request == 0
    # Different request numbers never share a prompt.
    assert build_messages(config, 17, "") != build_messages(config, 1, "")
    with pytest.raises(SystemExit):
        LoadConfig.from_args(parse_args(["--concurrency", "4", "--first-request", "-1"]))
