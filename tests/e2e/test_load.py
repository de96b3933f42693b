"""Mixed load at concurrency 64 on the real server: every request completes with exactly the tokens it
asked for, the KV pool drains, and memory stops growing across rounds (leak check).

`pytest --long` runs more and larger rounds; CI runs one round of 200 and two short rounds after it.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.e2e.conftest import RunningServer
from tests.e2e.test_companion_endpoints import scrape

CONCURRENCY = 64
FIRST_ROUND = 200
LEAK_ROUND = 32
LEAK_ROUNDS = 2
LONG_LEAK_ROUNDS = 6
RSS_GROWTH_BOUND_MIB = 64
"""Allowed RSS growth over the leak rounds, which repeat the first round's mix (same shapes, nothing left
to compile). Measured here: a few MiB of allocator noise; a leak of one KV page or prompt per request
would exceed this within a round."""

SYSTEM = "You are a terse assistant. Answer in as few words as you can, and never apologise."


@dataclass(frozen=True)
class Planned:
    """One request of the mix and the number of completion tokens it must report."""

    path: str
    body: dict[str, Any]
    completion_tokens: int

    @property
    def streaming(self) -> bool:
        return bool(self.body.get("stream"))


def plan(index: int, rng: random.Random, model: str) -> Planned:
    """Five kinds in turn: greedy chat, seeded sampled stream, n=2 with logprobs, legacy completions,
    chat with penalties/bias/stop strings. `ignore_eos` fixes every length, so the token count is exact."""
    tokens = rng.randint(1, 6)
    messages = [
        {"role": "system", "content": SYSTEM},
        {
            "role": "user",
            "content": f"Request {index}: name a colour and a number near {rng.randint(1, 999)}.",
        },
    ]
    base: dict[str, Any] = {"model": model, "max_tokens": tokens, "ignore_eos": True}
    kind = index % 5
    if kind == 0:
        return Planned("/v1/chat/completions", {**base, "messages": messages, "temperature": 0}, tokens)
    if kind == 1:
        body = {
            **base,
            "messages": messages,
            "stream": True,
            "stream_options": {"include_usage": True},
            "temperature": 0.8,
            "seed": index,
            "min_tokens": tokens,
        }
        return Planned("/v1/chat/completions", body, tokens)
    if kind == 2:
        body = {**base, "messages": messages, "n": 2, "seed": index, "logprobs": True, "top_logprobs": 2}
        return Planned("/v1/chat/completions", body, 2 * tokens)
    if kind == 3:
        body = {**base, "prompt": f"{SYSTEM}\nQ{index}: the number after {index} is", "temperature": 0}
        return Planned("/v1/completions", body, tokens)
    body = {
        **base,
        "messages": messages,
        "presence_penalty": 0.5,
        "frequency_penalty": 0.3,
        "logit_bias": {"28": -5, "29": 3},
        "stop": ["<never appears>", "\u2603\u2603\u2603"],
        "top_k": 20,
        "top_p": 0.9,
        "seed": index,
    }
    return Planned("/v1/chat/completions", body, tokens)


async def send(session: aiohttp.ClientSession, server: RunningServer, planned: Planned) -> None:
    """Send one request and check its status, shape and token counts."""
    async with session.post(
        server.base_url + planned.path,
        json=planned.body,
        headers={"Authorization": f"Bearer {server.api_key}"},
    ) as response:
        assert response.status == 200, await response.text()
        if not planned.streaming:
            reply = await response.json()
            check_reply(reply, planned)
            return
        usage = None
        content_tokens = 0
        async for line in response.content:
            if not line.startswith(b"data: ") or line.strip() == b"data: [DONE]":
                continue
            chunk = json.loads(line[len(b"data: ") :])
            assert "error" not in chunk, chunk
            if chunk.get("usage"):
                usage = chunk["usage"]
            for choice in chunk["choices"]:
                content_tokens += 1 if choice["delta"].get("content") else 0  # the first delta is ""
                if choice.get("finish_reason") is not None:
                    assert choice["finish_reason"] == "length"
        assert usage is not None and usage["completion_tokens"] == planned.completion_tokens
        assert 1 <= content_tokens <= planned.completion_tokens


def check_reply(reply: dict[str, Any], planned: Planned) -> None:
    assert reply["usage"]["completion_tokens"] == planned.completion_tokens
    choices = reply["choices"]
    assert len(choices) == planned.body.get("n", 1)
    per_choice = planned.completion_tokens // len(choices)
    for choice in choices:
        assert choice["finish_reason"] == "length"
        if planned.body.get("logprobs") is True:
            entries = choice["logprobs"]["content"]
            assert len(entries) == per_choice
            assert all(len(entry["top_logprobs"]) == 2 for entry in entries)


async def run_round(server: RunningServer, count: int, seed: int) -> int:
    """Send `count` planned requests, at most CONCURRENCY at a time; return the completion tokens due."""
    rng = random.Random(seed)
    requests = [plan(i, rng, server.model) for i in range(count)]
    gate = asyncio.Semaphore(CONCURRENCY)

    async def limited(session: aiohttp.ClientSession, planned: Planned) -> None:
        async with gate:
            await send(session, server, planned)

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1800)) as session:
        await asyncio.gather(*(limited(session, p) for p in requests))
    return sum(p.completion_tokens for p in requests)


def wait_idle(server: RunningServer) -> dict[str, float]:
    deadline = time.monotonic() + 60
    while True:
        metrics = scrape(server)
        idle = metrics["vllm:num_requests_running"] == 0 and metrics["vllm:num_requests_waiting"] == 0
        if (idle and metrics["vllm:kv_cache_usage_perc"] == 0) or time.monotonic() > deadline:
            return metrics
        time.sleep(0.2)


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS line")


@pytest.mark.slow
def test_mixed_load_completes_drains_and_does_not_leak(
    server: RunningServer, request: pytest.FixtureRequest
) -> None:
    long_run = bool(request.config.getoption("--long", default=False))
    before = scrape(server)
    due = asyncio.run(run_round(server, FIRST_ROUND * (3 if long_run else 1), seed=0))
    metrics = wait_idle(server)
    assert metrics["vllm:num_requests_running"] == 0 and metrics["vllm:num_requests_waiting"] == 0
    assert metrics["vllm:kv_cache_usage_perc"] == 0
    generated = metrics["vllm:generation_tokens_total"] - before["vllm:generation_tokens_total"]
    assert generated == due  # other e2e tests run one at a time, so the counter moved for this round only

    # The leak check repeats the mix (seed 0 again: same prompts, same shapes), so nothing new is compiled.
    samples = [rss_mib(server.pid)]
    for _ in range(LONG_LEAK_ROUNDS if long_run else LEAK_ROUNDS):
        asyncio.run(run_round(server, LEAK_ROUND, seed=0))
        assert wait_idle(server)["vllm:kv_cache_usage_perc"] == 0
        samples.append(rss_mib(server.pid))
    growth = samples[-1] - samples[0]
    print(f"RSS after each round (MiB): {[round(s, 1) for s in samples]}; growth {growth:.1f} MiB")
    assert growth < RSS_GROWTH_BOUND_MIB, samples


def test_the_server_log_never_contains_an_api_key(server: RunningServer) -> None:
    wrong = "sk-wrong-0123456789abcdef"

    async def knock() -> list[int]:
        async with aiohttp.ClientSession() as session:
            statuses = []
            for header in (f"Bearer {wrong}", wrong, f"Bearer {server.api_key}"):
                async with session.get(
                    f"{server.base_url}/v1/models", headers={"Authorization": header}
                ) as response:
                    statuses.append(response.status)
            return statuses

    assert asyncio.run(knock()) == [401, 401, 200]
    log = server.log_path.read_text(errors="replace")
    assert "GET /v1/models" in log or "/v1/" in log  # the log is the live server's, with its requests
    assert server.api_key not in log and wrong not in log
