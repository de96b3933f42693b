"""Load generator for any OpenAI-compatible chat-completions server: latency and throughput per concurrency.

    make serve                                   # one terminal: the server on 127.0.0.1:8000
    .venv/bin/python benchmarks/load_generator.py --concurrency 1 4 16 64 --ignore-eos

(`jaxserve bench` runs this same generator, starting a server itself unless given `--base-url`.)

For each concurrency level C it sends exactly N streamed requests (`--requests`, default max(8, 2*C)) with
at most C in flight, then prints one block of results per level and, at the end, a markdown table for a
README. Nothing is asserted; failures are counted and the first few messages are shown.
Before the warm-up it waits while the server's `/metrics` reports `jaxserve:step_shapes_loading` above 0
(a warm jaxserve is healthy before every step shape has loaded); other servers do not export it.

Every request is `POST {base_url}/v1/chat/completions` with `stream: true` and
`stream_options: {"include_usage": true}`; the SSE `data:` lines are read until `data: [DONE]`.
Prompts are deterministic (from `--seed`) and distinct per request: each user message starts with its own
request number and random words, so a prefix cache can share at most the optional common system prompt
(`--shared-prefix-words`). `--ignore-eos` sends vLLM's extra fields `ignore_eos: true` and
`min_tokens: max_tokens` (llama.cpp's server honours `ignore_eos` and ignores `min_tokens`), so every
request generates exactly `--max-tokens` tokens.

What is measured, per request (all clocks are `time.perf_counter()` on this client):
    TTFT    from just before the POST is sent to the first SSE chunk whose delta carries text
            (`content`, `reasoning_content`/`reasoning` or `tool_calls`); the role chunk with empty content
            does not count.
    ITL     the gaps between successive text-carrying chunks (vLLM benchmark_serving's definition). A chunk
            may carry several tokens (a server may hold back half a UTF-8 character or a possible stop
            string), so ITL is per chunk, not per token. Percentiles pool the gaps of all requests.
    TPOT    (E2E - TTFT) / (output_tokens - 1), one value per request with more than one output token
            (vLLM's definition); percentiles are over requests.
    E2E     from just before the POST to `data: [DONE]`.
    tokens  output and prompt tokens from the final usage chunk; a server that sends no usage falls back to
            the number of text-carrying chunks as output tokens and 0 prompt tokens.
A request fails on a non-200 status, an error event in the stream, a stream that ends without
`[DONE]`, a timeout or any client exception; failed requests are left out of every statistic.
Throughputs divide the completed requests' tokens by the level's wall time (first send to last finish).
Percentiles interpolate linearly between the two closest ranks (numpy's default, as vLLM uses).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import math
import os
import random
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TextIO

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from jaxserve.http.metrics import STEP_SHAPES_LOADING_METRIC

# A plain vocabulary for synthetic prompts: common words that tokenise to about one token each.
WORDS = (
    "time year people way day man thing woman life child world school state family student group country "
    "problem hand part place case week company system program question work government number night point "
    "home water room mother area money story fact month lot right study book eye job word business issue "
    "side kind head house service friend father power hour game line end member law car city community name "
    "president team minute idea kid body information back parent face others level office door health "
    "person art war history party result change morning reason research girl guy moment air teacher force"
).split()
MAX_ERRORS_SHOWN = 5
ERROR_TEXT_LIMIT = 300  # characters of an error body kept; enough for an OpenAI error object


@dataclass(frozen=True)
class LoadConfig:
    """Everything one run needs; built once from the command line."""

    base_url: str = "http://127.0.0.1:8000"
    model: str | None = None
    api_key: str | None = None
    concurrency_levels: tuple[int, ...] = (1,)
    requests: int | None = None
    max_tokens: int = 64
    prompt_words: int = 64
    shared_prefix_words: int = 0
    temperature: float = 0.0
    ignore_eos: bool = False
    timeout_s: float = 600.0
    warmup_requests: int = 1
    seed: int = 0
    first_request: int = 0  # number of the first request: runs that must not repeat a prompt start apart
    json_path: str | None = None

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> LoadConfig:
        """Validate the parsed command line once."""
        positive = [*args.concurrency, args.max_tokens, args.prompt_words, args.timeout]
        positive += [] if args.requests is None else [args.requests]
        if min(positive) <= 0:
            raise SystemExit(
                "--concurrency, --requests, --max-tokens, --prompt-words and --timeout must be > 0"
            )
        if args.shared_prefix_words < 0 or args.warmup_requests < 0 or args.first_request < 0:
            raise SystemExit("--shared-prefix-words, --warmup-requests and --first-request must be >= 0")
        return cls(
            base_url=args.base_url.rstrip("/"),
            model=args.model,
            api_key=args.api_key,
            concurrency_levels=tuple(args.concurrency),
            requests=args.requests,
            max_tokens=args.max_tokens,
            prompt_words=args.prompt_words,
            shared_prefix_words=args.shared_prefix_words,
            temperature=args.temperature,
            ignore_eos=args.ignore_eos,
            timeout_s=args.timeout,
            warmup_requests=args.warmup_requests,
            seed=args.seed,
            first_request=args.first_request,
            json_path=args.json,
        )

    def requests_for(self, concurrency: int) -> int:
        """N for one level: --requests, or max(8, 2*C) so every slot is refilled at least once."""
        return self.requests if self.requests is not None else max(8, 2 * concurrency)


@dataclass(frozen=True)
class RequestResult:
    """One request's timings (seconds) and token counts, or its error."""

    error: str | None = None
    ttft_s: float | None = None
    e2e_s: float = 0.0
    itls_s: tuple[float, ...] = ()
    output_tokens: int = 0
    prompt_tokens: int = 0

    @property
    def tpot_s(self) -> float | None:
        """(E2E - TTFT) / (output_tokens - 1); undefined for fewer than two tokens."""
        if self.ttft_s is None or self.output_tokens < 2:
            return None
        return (self.e2e_s - self.ttft_s) / (self.output_tokens - 1)


@dataclass(frozen=True)
class Stats:
    """Mean, median and 99th percentile of one metric, in milliseconds (None when there are no values)."""

    mean: float | None
    p50: float | None
    p99: float | None

    @classmethod
    def of_seconds(cls, values: Sequence[float]) -> Stats:
        ms = [v * 1000.0 for v in values]
        if not ms:
            return cls(None, None, None)
        return cls(statistics.fmean(ms), percentile(ms, 50), percentile(ms, 99))


@dataclass(frozen=True)
class LevelSummary:
    """The aggregate results of one concurrency level."""

    concurrency: int
    completed: int
    failed: int
    wall_s: float
    request_throughput: float
    output_throughput: float
    total_token_throughput: float
    output_tokens: int
    prompt_tokens: int
    ttft_ms: Stats
    tpot_ms: Stats
    itl_ms: Stats
    e2e_ms: Stats
    errors: tuple[str, ...]


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100), interpolating linearly between the two closest ranks."""
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def shared_prefix(config: LoadConfig) -> str:
    """The system prompt common to every request (empty when --shared-prefix-words is 0)."""
    rng = random.Random(config.seed)
    return " ".join(rng.choice(WORDS) for _ in range(config.shared_prefix_words))


def build_messages(config: LoadConfig, index: int, system: str) -> list[dict[str, str]]:
    """Request `index`'s messages: its number comes first so no two prompts share a user-message prefix."""
    rng = random.Random(f"{config.seed}-{index}")
    words = " ".join(rng.choice(WORDS) for _ in range(config.prompt_words))
    user = f"Request {index}. Write a story using these words: {words}"
    messages = [{"role": "system", "content": system}] if system else []
    return messages + [{"role": "user", "content": user}]


def build_payload(config: LoadConfig, model: str, messages: list[dict[str, str]]) -> dict[str, Any]:
    """The chat-completions request body."""
    payload: dict[str, Any] = {
        "model": model,
        "messages": messages,
        "max_tokens": config.max_tokens,
        "temperature": config.temperature,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if config.ignore_eos:
        payload["ignore_eos"] = True  # vLLM extra body fields: a fixed output length
        payload["min_tokens"] = config.max_tokens
    return payload


def auth_headers(config: LoadConfig) -> dict[str, str]:
    return {"Authorization": f"Bearer {config.api_key}"} if config.api_key else {}


def carries_text(chunk: dict[str, Any]) -> bool:
    """Whether a chunk's delta holds generated output (the opening role chunk has empty content)."""
    for choice in chunk.get("choices") or []:
        delta = choice.get("delta") or {}
        if delta.get("content") or delta.get("reasoning_content") or delta.get("reasoning"):
            return True
        if delta.get("tool_calls"):
            return True
    return False


def short(text: str) -> str:
    return text if len(text) <= ERROR_TEXT_LIMIT else text[:ERROR_TEXT_LIMIT] + "..."


async def stream_request(
    session: aiohttp.ClientSession, config: LoadConfig, payload: dict[str, Any]
) -> RequestResult:
    """Send one streamed request and time its chunks; never raises."""
    started = time.perf_counter()
    try:
        return await read_stream(session, config, payload, started)
    except Exception as exc:  # a benchmark counts every failure; only cancellation propagates
        return RequestResult(
            error=f"{type(exc).__name__}: {short(str(exc))}", e2e_s=time.perf_counter() - started
        )


async def read_stream(
    session: aiohttp.ClientSession, config: LoadConfig, payload: dict[str, Any], started: float
) -> RequestResult:
    """The body of `stream_request`: the status check and the SSE loop."""
    url = f"{config.base_url}/v1/chat/completions"
    text_times: list[float] = []
    usage: dict[str, Any] | None = None
    async with session.post(url, json=payload, headers=auth_headers(config)) as response:
        if response.status != 200:
            body = await response.text()
            return RequestResult(error=f"HTTP {response.status}: {short(body)}")
        async for raw in response.content:
            line = raw.decode("utf-8").strip()
            if not line.startswith("data:"):
                continue  # blank separators, comments, `event:` fields
            data = line[len("data:") :].strip()
            if data == "[DONE]":
                return finished_result(started, time.perf_counter(), text_times, usage)
            chunk = json.loads(data)
            if "error" in chunk:
                return RequestResult(error=f"error event: {short(json.dumps(chunk['error']))}")
            if carries_text(chunk):
                text_times.append(time.perf_counter())
            usage = chunk.get("usage") or usage
    return RequestResult(error="stream ended without data: [DONE]", e2e_s=time.perf_counter() - started)


def finished_result(
    started: float, done: float, text_times: list[float], usage: dict[str, Any] | None
) -> RequestResult:
    """A completed request's result from its chunk arrival times and final usage."""
    gaps = tuple(later - earlier for earlier, later in zip(text_times, text_times[1:], strict=False))
    return RequestResult(
        ttft_s=text_times[0] - started if text_times else None,
        e2e_s=done - started,
        itls_s=gaps,
        output_tokens=int(usage["completion_tokens"]) if usage else len(text_times),
        prompt_tokens=int(usage.get("prompt_tokens", 0)) if usage else 0,
    )


async def run_requests(
    session: aiohttp.ClientSession,
    config: LoadConfig,
    model: str,
    indices: range,
    concurrency: int,
    progress: Progress | None = None,
) -> list[RequestResult]:
    """Send one request per index with at most `concurrency` in flight; results in index order."""
    system = shared_prefix(config)
    limit = asyncio.Semaphore(concurrency)

    async def one(index: int) -> RequestResult:
        async with limit:
            payload = build_payload(config, model, build_messages(config, index, system))
            result = await stream_request(session, config, payload)
        if progress is not None:
            progress.advance(failed=result.error is not None)
        return result

    return await asyncio.gather(*(one(i) for i in indices))


class Progress:
    """A one-line progress bar on stderr for one concurrency level (redrawn in place on a terminal)."""

    WIDTH = 30

    def __init__(self, label: str, total: int, stream: TextIO | None = None) -> None:
        self.label, self.total, self.done, self.failed = label, total, 0, 0
        self.stream = stream or sys.stderr
        self.started = time.perf_counter()
        self._draw()

    def advance(self, *, failed: bool) -> None:
        self.done += 1
        self.failed += failed
        self._draw()

    def _draw(self) -> None:
        filled = self.WIDTH * self.done // max(self.total, 1)
        bar = "#" * filled + "." * (self.WIDTH - filled)
        elapsed = time.perf_counter() - self.started
        failed = f", {self.failed} failed" if self.failed else ""
        line = f"{self.label} [{bar}] {self.done}/{self.total} requests, {elapsed:.0f} s{failed}"
        if self.stream.isatty():
            end = "\n" if self.done == self.total else ""
            self.stream.write(f"\r{line}{end}")
        elif self.done == self.total or self.done % max(1, self.total // 4) == 0:
            self.stream.write(line + "\n")  # a log file gets a few lines, not one per request
        self.stream.flush()


def summarize(concurrency: int, results: list[RequestResult], wall_s: float) -> LevelSummary:
    """Aggregate one level's per-request results."""
    done = [r for r in results if r.error is None]
    wall_s = max(wall_s, 1e-9)  # a level whose requests all fail at once can take ~0 s
    output_tokens = sum(r.output_tokens for r in done)
    prompt_tokens = sum(r.prompt_tokens for r in done)
    return LevelSummary(
        concurrency=concurrency,
        completed=len(done),
        failed=len(results) - len(done),
        wall_s=wall_s,
        request_throughput=len(done) / wall_s,
        output_throughput=output_tokens / wall_s,
        total_token_throughput=(output_tokens + prompt_tokens) / wall_s,
        output_tokens=output_tokens,
        prompt_tokens=prompt_tokens,
        ttft_ms=Stats.of_seconds([r.ttft_s for r in done if r.ttft_s is not None]),
        tpot_ms=Stats.of_seconds([t for r in done if (t := r.tpot_s) is not None]),
        itl_ms=Stats.of_seconds([gap for r in done for gap in r.itls_s]),
        e2e_ms=Stats.of_seconds([r.e2e_s for r in done]),
        errors=tuple(r.error for r in results if r.error is not None)[:MAX_ERRORS_SHOWN],
    )


def ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def format_level(summary: LevelSummary) -> str:
    """The per-level results block."""
    s = summary
    lines = [
        f"=== concurrency {s.concurrency} ===",
        f"requests completed / failed   {s.completed} / {s.failed}",
        f"wall time (s)                 {s.wall_s:.2f}",
        f"request throughput (req/s)    {s.request_throughput:.2f}",
        f"output throughput (tok/s)     {s.output_throughput:.1f}   ({s.output_tokens} tokens)",
        f"total throughput (tok/s)      {s.total_token_throughput:.1f}   (+{s.prompt_tokens} prompt tokens)",
        f"{'(ms)':<10}{'mean':>10}{'p50':>10}{'p99':>10}",
    ]
    for name, stats in (("TTFT", s.ttft_ms), ("TPOT", s.tpot_ms), ("ITL", s.itl_ms), ("E2E", s.e2e_ms)):
        lines.append(f"{name:<10}{ms(stats.mean):>10}{ms(stats.p50):>10}{ms(stats.p99):>10}")
    lines += [f"error: {e}" for e in s.errors]
    return "\n".join(lines)


def format_markdown(summaries: list[LevelSummary]) -> str:
    """One row per level, for pasting into a README."""
    lines = [
        "| concurrency | req/s | output tok/s | TTFT p50 (ms) | TTFT p99 (ms) | TPOT p50 (ms) | ITL p50 (ms) | ITL p99 (ms) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in summaries:
        lines.append(
            f"| {s.concurrency} | {s.request_throughput:.2f} | {s.output_throughput:.1f} | {ms(s.ttft_ms.p50)} "
            f"| {ms(s.ttft_ms.p99)} | {ms(s.tpot_ms.p50)} | {ms(s.itl_ms.p50)} | {ms(s.itl_ms.p99)} |"
        )
    return "\n".join(lines)


def write_json(
    path: str,
    config: LoadConfig,
    model: str,
    levels: list[tuple[LevelSummary, list[RequestResult]]],
    next_request: int,
) -> None:
    """The config, every level's summary and every request's result, as JSON; `next_request` is the number
    after the last request sent (warm-up included): where a later run starts (`--first-request`) so that
    it repeats no prompt."""
    document = {
        "config": dataclasses.asdict(dataclasses.replace(config, api_key=None)),
        "model": model,
        "next_request": next_request,
        "levels": [
            {"summary": dataclasses.asdict(summary), "requests": [dataclasses.asdict(r) for r in results]}
            for summary, results in levels
        ],
    }
    with open(path, "w") as f:
        json.dump(document, f, indent=2)


async def resolve_model(session: aiohttp.ClientSession, config: LoadConfig) -> str:
    """--model, or the first id GET /v1/models lists."""
    if config.model:
        return config.model
    try:
        async with session.get(f"{config.base_url}/v1/models", headers=auth_headers(config)) as response:
            body = await response.text()
            if response.status != 200:
                raise SystemExit(f"GET /v1/models: HTTP {response.status}: {short(body)}")
            return str(json.loads(body)["data"][0]["id"])
    except (aiohttp.ClientError, TimeoutError, ValueError, KeyError, IndexError) as exc:
        raise SystemExit(f"cannot list models at {config.base_url}: {exc!r}; pass --model") from exc


async def step_shapes_loading(session: aiohttp.ClientSession, config: LoadConfig) -> int:
    """How many step shapes a jaxserve server is still loading after start-up (0 for other servers)."""
    try:
        async with session.get(f"{config.base_url}/metrics", headers=auth_headers(config)) as response:
            if response.status != 200:
                return 0
            text = await response.text()
    except (aiohttp.ClientError, TimeoutError):
        return 0
    return int(metric_totals(text, [STEP_SHAPES_LOADING_METRIC]).get(STEP_SHAPES_LOADING_METRIC, 0))


def metric_totals(text: str, names: Sequence[str]) -> dict[str, float]:
    """Each of `names` summed over its samples (every label set) in a Prometheus text exposition; a
    name with no sample is absent."""
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in names:
                totals[sample.name] = totals.get(sample.name, 0.0) + sample.value
    return totals


async def wait_for_step_loads(session: aiohttp.ClientSession, config: LoadConfig) -> None:
    """Start measuring a server at full speed: a warm jaxserve is healthy while step shapes it has not
    needed yet still load in the background, and those loads share the CPU with the steps measured."""
    started = time.perf_counter()
    loading = await step_shapes_loading(session, config)
    if not loading:
        return
    print(f"waiting for the server to load {loading} more step shapes", flush=True)
    while loading and time.perf_counter() - started < config.timeout_s:
        await asyncio.sleep(0.5)
        loading = await step_shapes_loading(session, config)
    print(f"step shapes loaded after {time.perf_counter() - started:.1f} s more", flush=True)


async def run(config: LoadConfig) -> list[tuple[LevelSummary, list[RequestResult]]]:
    """Warm up, run every level, print the results and optionally write the JSON file."""
    timeout = aiohttp.ClientTimeout(total=config.timeout_s)
    # limit=0: the semaphore, not the connection pool, bounds the requests in flight.
    # force_close: a fresh connection per request. Reusing idle keep-alive connections races with servers
    # that close them sooner than aiohttp expects (llama-server after 5 s), which fails requests that the
    # server never saw; a local connect costs well under a millisecond.
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        model = await resolve_model(session, config)
        print(f"model {model} at {config.base_url}", flush=True)
        await wait_for_step_loads(session, config)
        # Request numbers keep rising across levels so no prompt is ever repeated.
        next_index = config.first_request
        if config.warmup_requests:
            warmup_indices = range(next_index, next_index + config.warmup_requests)
            warmup = await run_requests(session, config, model, warmup_indices, config.warmup_requests)
            next_index = warmup_indices.stop
            failed = [r.error for r in warmup if r.error is not None]
            print(f"warm-up: {len(warmup) - len(failed)} of {len(warmup)} requests completed", flush=True)
            for error in failed[:MAX_ERRORS_SHOWN]:
                print(f"warm-up error: {error}", flush=True)
        levels: list[tuple[LevelSummary, list[RequestResult]]] = []
        for concurrency in config.concurrency_levels:
            indices = range(next_index, next_index + config.requests_for(concurrency))
            next_index = indices.stop
            progress = Progress(f"concurrency {concurrency}", len(indices))
            started = time.perf_counter()
            results = await run_requests(session, config, model, indices, concurrency, progress)
            summary = summarize(concurrency, results, time.perf_counter() - started)
            levels.append((summary, results))
            print(format_level(summary) + "\n", flush=True)
    print(format_markdown([summary for summary, _ in levels]))
    if config.json_path:
        write_json(config.json_path, config, model, levels, next_index)
        print(f"\nresults written to {config.json_path}")
    return levels


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--base-url", default="http://127.0.0.1:8000")
    parser.add_argument("--model", default=None, help="model id (default: the first from GET /v1/models)")
    parser.add_argument(
        "--api-key", default=os.environ.get("OPENAI_API_KEY"), help="bearer token (default: $OPENAI_API_KEY)"
    )
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1], help="levels, e.g. 1 4 16 64")
    parser.add_argument(
        "--requests", type=int, default=None, help="requests per level (default: max(8, 2*C))"
    )
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--prompt-words", type=int, default=64, help="random words in each user message")
    parser.add_argument(
        "--shared-prefix-words", type=int, default=0, help="words of a system prompt all share"
    )
    parser.add_argument("--temperature", type=float, default=0.0)
    parser.add_argument(
        "--ignore-eos", action="store_true", help="send ignore_eos: true (exactly max tokens)"
    )
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per request")
    parser.add_argument("--warmup-requests", type=int, default=1, help="sent together first, not measured")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic prompts")
    parser.add_argument(
        "--first-request",
        type=int,
        default=0,
        help="number of the first request (warm-up included); runs against one server that must not "
        "repeat each other's prompts start apart",
    )
    parser.add_argument("--json", default=None, metavar="PATH", help="also write all results here")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    config = LoadConfig.from_args(parse_args(argv))
    try:
        asyncio.run(run(config))
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
