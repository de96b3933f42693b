"""`jaxserve bench` against the real server: the report it prints as JSON, and the load it sent."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.e2e.conftest import RunningServer


def test_bench_reports_every_level_and_the_servers_compilations(server: RunningServer) -> None:
    command = [
        sys.executable, "-m", "jaxserve.cli", "bench", "--base-url", server.base_url,
        "--api-key", server.api_key, "--concurrency", "1", "2", "--requests", "2",
        "--max-tokens", "3", "--prompt-words", "8", "--warmup-requests", "0", "--json", "-",
    ]  # fmt: skip
    finished = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert finished.returncode == 0, finished.stderr[-2000:]
    report = json.loads(finished.stdout)  # with --json -, stdout is the JSON document alone
    assert report["startup"] is None  # a server it did not start
    compilations = report["compilations_during_benchmark"]
    assert compilations is not None and compilations["count"] >= 0 and compilations["seconds"] >= 0
    levels = report["levels"]
    assert [level["concurrency"] for level in levels] == [1, 2]
    for level in levels:
        assert level["completed"] == 2 and level["failed"] == 0
        assert level["output_tokens"] == 2 * 3  # ignore_eos + min_tokens: exactly --max-tokens each
        assert level["ttft_ms"]["p50"] is not None and level["output_throughput"] > 0
    assert "concurrency 2 [" in finished.stderr  # the progress bar goes to stderr
    assert "XLA compilations during the benchmark" in finished.stderr
