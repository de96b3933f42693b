"""SIGTERM drains: no new connections, the running streamed request completes, the process exits 0; a
second signal ends the drain at once."""

from __future__ import annotations

import json
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from tests.e2e.conftest import launch_server


def start_server(tmp_path: Path, shutdown_timeout: int) -> tuple[subprocess.Popen[bytes], str, Path]:
    """`jaxserve serve` on a free port with the default model, healthy; returns the process, URL and log."""
    log_path = tmp_path / "server.log"
    args = ["--no-warmup", "--max-num-seqs", "2", "--shutdown-timeout", str(shutdown_timeout)]
    proc, url = launch_server(args, log_path)
    return proc, url, log_path


def streamed_chat(url: str, content: str, max_tokens: int) -> urllib.request.Request:
    body = {"messages": [{"role": "user", "content": content}], "stream": True,
            "max_tokens": max_tokens, "ignore_eos": True, "temperature": 0}  # fmt: skip
    return urllib.request.Request(
        f"{url}/v1/chat/completions",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )


def test_sigterm_lets_a_running_stream_finish(tmp_path: Path) -> None:
    proc, url, _ = start_server(tmp_path, shutdown_timeout=120)
    try:
        with urllib.request.urlopen(streamed_chat(url, "Tell me a story.", 40), timeout=300) as stream:
            first = stream.readline()
            assert first.startswith(b"data: ")
            proc.send_signal(signal.SIGTERM)
            rest = stream.read().decode()
        events = [
            line[len("data: ") :]
            for line in (first.decode() + rest).splitlines()
            if line.startswith("data: ")
        ]
        assert events[-1] == "[DONE]"
        finishes = [
            json.loads(e)["choices"][0].get("finish_reason") for e in events[:-1] if json.loads(e)["choices"]
        ]
        assert finishes[-1] == "length"
        assert proc.wait(timeout=120) == 0
        with pytest.raises(OSError):  # the port no longer accepts connections
            urllib.request.urlopen(f"{url}/health", timeout=5)
    finally:
        if proc.poll() is None:
            proc.kill()


def test_a_second_sigint_exits_without_waiting_for_running_requests(tmp_path: Path) -> None:
    """A stream that would run for minutes does not hold the process after a second SIGINT."""
    proc, url, log_path = start_server(tmp_path, shutdown_timeout=600)
    try:
        with urllib.request.urlopen(streamed_chat(url, "Tell me a long story.", 1500), timeout=300) as stream:
            assert stream.readline().startswith(b"data: ")
            proc.send_signal(signal.SIGINT)
            time.sleep(0.5)
            assert proc.poll() is None  # the first signal drains: the stream is still running
            proc.send_signal(signal.SIGINT)
            # 1500 tokens take well over a minute here; the second signal ends the wait at once.
            assert proc.wait(timeout=30) == 0
        assert "shutting down with 1 request(s) unfinished" in log_path.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
