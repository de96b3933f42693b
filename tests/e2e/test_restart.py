"""A restarted server loads the steps its predecessor compiled (the executable store, read by a new
process) and answers exactly as the predecessor did."""

from __future__ import annotations

import json
import re
import urllib.request
from pathlib import Path

from tests.e2e.conftest import launch_server, stop_server

CHAT = {
    "messages": [{"role": "user", "content": "Name three colours."}],
    "max_tokens": 12,
    "temperature": 0,
}
STEP_LINE = re.compile(r"(compiled|loaded) step batch=(\d+) tokens=(\d+) pages=(\d+)")


def greedy_answer(url: str) -> str:
    request = urllib.request.Request(
        f"{url}/v1/chat/completions",
        data=json.dumps(CHAT).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=300) as response:
        return str(json.load(response)["choices"][0]["message"]["content"])


def serve_once(cache_dir: Path, log_path: Path) -> tuple[str, dict[str, set[tuple[str, ...]]]]:
    """Start a server on `cache_dir`, ask CHAT, stop it: its answer, and the step shapes it compiled and
    loaded (from its log)."""
    args = ["--no-warmup", "--max-num-seqs", "2", "--compilation-cache-dir", str(cache_dir)]
    proc, url = launch_server(args, log_path)
    try:
        answer = greedy_answer(url)
    finally:
        stop_server(proc)
    steps: dict[str, set[tuple[str, ...]]] = {"compiled": set(), "loaded": set()}
    for how, *shape in STEP_LINE.findall(log_path.read_text()):
        steps[how].add(tuple(shape))
    return answer, steps


def test_a_restart_loads_the_stored_steps_and_answers_the_same(tmp_path: Path) -> None:
    cache_dir = tmp_path / "cache"
    first_answer, first = serve_once(cache_dir, tmp_path / "first.log")
    assert first["compiled"] and not first["loaded"]
    stored = list((cache_dir / "executables").glob("*.xla"))
    assert len(stored) == len(first["compiled"])

    # With the stored steps gone, nothing else in the directory may stand in for a compile: an
    # executable served from JAX's own cache and stored again would be missing kernels, and the start
    # after this one would fail its first request.
    for path in stored:
        path.unlink()
    second_answer, second = serve_once(cache_dir, tmp_path / "second.log")
    assert second == first

    third_answer, third = serve_once(cache_dir, tmp_path / "third.log")
    assert third == {"compiled": set(), "loaded": first["compiled"]}
    assert third_answer == second_answer == first_answer and first_answer
