"""Start the real server (default model, real HTTP) once for the end-to-end tests."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from jaxserve.bench.command import free_port

STARTUP_TIMEOUT_SECONDS = 300
API_KEY = "test-key-e2e"


@dataclass(frozen=True)
class RunningServer:
    base_url: str
    model: str
    api_key: str
    log_path: Path
    pid: int


def wait_healthy(url: str, proc: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{log_path.read_text()[-4000:]}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.5)
    raise RuntimeError(
        f"server not healthy after {STARTUP_TIMEOUT_SECONDS}s:\n{log_path.read_text()[-4000:]}"
    )


def launch_server(
    args: list[str], log_path: Path, env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[bytes], str]:
    """`jaxserve serve ARGS` (default model unless ARGS name one) on a free port, healthy: the process
    and its URL. Its output goes to `log_path`."""
    port = free_port()
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "jaxserve.cli", "serve", "--port", str(port), *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(os.environ) if env is None else env,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc, log_path)
    except BaseException:
        proc.kill()
        raise
    return proc, url


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """`jaxserve serve` with the embedded default model on a free port, API key required."""
    log_path = tmp_path_factory.mktemp("server") / "server.log"
    env = dict(os.environ, JAXSERVE_API_KEY=API_KEY)
    proc, url = launch_server(["--no-warmup", "--max-num-seqs", "4"], log_path, env)
    try:
        yield RunningServer(
            base_url=url, model="SmolLM2-135M-Instruct", api_key=API_KEY, log_path=log_path, pid=proc.pid
        )
    finally:
        stop_server(proc)
