"""Multi-host serving, on one machine: two `jaxserve serve` processes of one CPU device each form a
2-device tensor-parallel mesh over localhost (gloo collectives). Process 0 serves HTTP and announces each
device call; process 1 repeats it. Greedy output must equal a single-process server's, token for token."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest

from jaxserve.bench.command import free_port
from tests.e2e.conftest import wait_healthy
from tests.engine.conftest import prompt_ids
from tests.modeling.tiny_checkpoints import write_sentencepiece_tokenizer, write_tiny_checkpoint

pytestmark = pytest.mark.slow  # three server start-ups

# Token-id prompts inside the tiny model's vocabulary: 10 and 40 tokens, the second over three chunks.
PROMPTS = (prompt_ids(10, salt=1), prompt_ids(40, salt=2))
SERVE_FLAGS = [
    "--no-warmup",
    "--max-num-seqs",
    "2",
    "--max-model-len",
    "64",
    "--max-num-batched-tokens",
    "16",
    "--dtype",
    "float32",
]


@pytest.fixture(scope="module")
def llama3_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory: Path = tmp_path_factory.mktemp("tiny_llama3_multihost")
    write_tiny_checkpoint("llama3", directory)
    write_sentencepiece_tokenizer(directory)
    return directory


@contextmanager
def serve(args: list[str], log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """One `jaxserve serve` process with a single CPU device; terminated (if still running) on exit."""
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1")
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "jaxserve.cli", "serve", *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def completions(url: str) -> list[dict[str, object]]:
    """Greedy completions with logprobs for every prompt, one request each."""
    results = []
    for prompt in PROMPTS:
        body = {
            "model": "tiny",
            "prompt": prompt,
            "max_tokens": 10,
            "temperature": 0,
            "ignore_eos": True,
            "logprobs": 3,
        }
        request = urllib.request.Request(
            f"{url}/v1/completions", json.dumps(body).encode(), {"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                results.append(json.loads(response.read())["choices"][0])
        except urllib.error.HTTPError as exc:
            raise AssertionError(f"{exc.code}: {exc.read().decode()}") from exc
    return results


def test_two_processes_generate_what_one_process_does(llama3_dir: Path, tmp_path: Path) -> None:
    model = ["--model", str(llama3_dir), "--served-model-name", "tiny", *SERVE_FLAGS]
    single_port, leader_port, coordinator = free_port(), free_port(), free_port()
    with serve([*model, "--port", str(single_port)], tmp_path / "single.log") as single:
        wait_healthy(f"http://127.0.0.1:{single_port}", single, tmp_path / "single.log")
        expected = completions(f"http://127.0.0.1:{single_port}")

    cluster = ["--coordinator-address", f"127.0.0.1:{coordinator}", "--num-processes", "2"]
    cluster += ["--tensor-parallel-size", "2"]
    with ExitStack() as stack:
        leader = stack.enter_context(
            serve([*model, *cluster, "--process-id", "0", "--port", str(leader_port)], tmp_path / "p0.log")
        )
        follower = stack.enter_context(
            serve([*model, *cluster, "--process-id", "1", "--port", str(free_port())], tmp_path / "p1.log")
        )
        wait_healthy(f"http://127.0.0.1:{leader_port}", leader, tmp_path / "p0.log")
        got = completions(f"http://127.0.0.1:{leader_port}")
        assert "2 global devices" in (tmp_path / "p0.log").read_text()

        # Process 0 drains on SIGTERM and tells the follower to stop: both exit cleanly.
        leader.send_signal(signal.SIGTERM)
        assert leader.wait(timeout=60) == 0, (tmp_path / "p0.log").read_text()[-3000:]
        assert follower.wait(timeout=60) == 0, (tmp_path / "p1.log").read_text()[-3000:]

    for want, have in zip(expected, got, strict=True):
        assert have["text"] == want["text"]
        assert have["logprobs"]["tokens"] == want["logprobs"]["tokens"]  # type: ignore[index]
        for lp_want, lp_have in zip(
            want["logprobs"]["token_logprobs"],  # type: ignore[index]
            have["logprobs"]["token_logprobs"],  # type: ignore[index]
            strict=True,
        ):
            assert lp_have == pytest.approx(lp_want, abs=1e-4)
