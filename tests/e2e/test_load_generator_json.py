"""The load generator's JSON file against the real server: every level's results, and the request number a
later run starts from."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from jaxserve.bench.load_generator import LoadConfig, run
from tests.e2e.conftest import RunningServer


def test_the_file_says_where_the_next_run_starts(server: RunningServer, tmp_path: Path) -> None:
    """compare_llamacpp.sh starts each level's runs at the number the level before stopped at, so no prompt
    repeats across levels: the warm-up request and each level's requests all count."""
    path = tmp_path / "load.json"
    config = LoadConfig(
        base_url=server.base_url,
        api_key=server.api_key,
        concurrency_levels=(1, 2),
        requests=3,
        max_tokens=2,
        prompt_words=6,
        ignore_eos=True,
        first_request=5,
        json_path=str(path),
        timeout_s=300,
    )
    asyncio.run(run(config))
    document = json.loads(path.read_text())
    assert document["next_request"] == 5 + 1 + 3 + 3  # first, the warm-up, two levels of three
    assert [level["summary"]["completed"] for level in document["levels"]] == [3, 3]
    assert document["config"]["first_request"] == 5 and document["config"]["api_key"] is None
