"""`jaxserve bench`: start (or target) a server, run the load generator at several concurrency levels with
fixed prompt and output lengths, and print throughput, TTFT, inter-token latency and the XLA
compilations the server did during the run (a warmed jaxserve does none).

    jaxserve bench                                   # starts `jaxserve serve` with the default model
    jaxserve bench --serve-args "--quantization int8" --concurrency 1 16
    jaxserve bench --base-url http://127.0.0.1:8000  # an already running server (jaxserve or another)
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jaxserve.bench.load_generator import LevelSummary, LoadConfig, RequestResult, metric_totals, run

STARTUP_TIMEOUT_S = 1800.0  # a cold start compiles every step shape: minutes on a small CPU
COMPILATIONS_METRIC = "jaxserve:xla_compilations_total"
COMPILE_SECONDS_METRIC = "jaxserve:xla_compile_seconds_total"
READY_LINE = re.compile(r"ready ([0-9.]+)s after start")
WARMUP_LINE = re.compile(r"(\d+) step shapes compiled, (\d+) loaded, warm-up ([0-9.]+)s")


@dataclass(frozen=True)
class StartedServer:
    base_url: str
    startup_s: float  # launch to a healthy /health, measured here
    log_path: Path


@dataclass(frozen=True)
class Compilations:
    count: float
    seconds: float


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`jaxserve bench` options."""
    target = parser.add_argument_group("server")
    target.add_argument(
        "--base-url", default=None, help="benchmark this running server instead of starting one"
    )
    target.add_argument(
        "--model", default=None, help="model for the started server (default: the embedded one)"
    )
    target.add_argument(
        "--serve-args", default="", help="more `jaxserve serve` options for the started server"
    )
    target.add_argument("--api-key", default=os.environ.get("OPENAI_API_KEY"), help="bearer token, if needed")
    load = parser.add_argument_group("load")
    load.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16, 64], help="levels")
    load.add_argument("--requests", type=int, default=None, help="requests per level (default: max(8, 2*C))")
    load.add_argument("--prompt-words", type=int, default=100, help="random words in each prompt")
    load.add_argument("--max-tokens", type=int, default=64, help="output tokens of every request (fixed)")
    load.add_argument("--shared-prefix-words", type=int, default=0, help="words of a shared system prompt")
    load.add_argument("--warmup-requests", type=int, default=1, help="sent first, not measured")
    load.add_argument("--timeout", type=float, default=1800.0, help="seconds per request")
    load.add_argument("--seed", type=int, default=0)
    load.add_argument("--first-request", type=int, default=0, help="number of the first request")
    parser.add_argument(
        "--json", default=None, metavar="PATH", help="write the results as JSON here ('-': stdout)"
    )


def bench(args: argparse.Namespace) -> int:
    """Run the benchmark; 0 when every request completed, 1 otherwise."""
    if args.base_url:
        return _measure(args, args.base_url.rstrip("/"), None)
    with started_server(args.model, shlex.split(args.serve_args), args.api_key) as server:
        return _measure(args, server.base_url, server)


def _measure(args: argparse.Namespace, base_url: str, server: StartedServer | None) -> int:
    quiet = args.json == "-"  # stdout carries only the JSON document then
    # The load generator's own command-line validation; --model here is the started server's model path,
    # not the id to request (the generator asks the server), and the JSON report is written below.
    load_args = dict(vars(args), base_url=base_url, model=None, temperature=0.0, json=None)
    config = LoadConfig.from_args(
        argparse.Namespace(**load_args, ignore_eos=True)  # fixed output lengths: ignore_eos + min_tokens
    )
    before = scrape_compilations(base_url, args.api_key)
    out = sys.stderr if quiet else sys.stdout
    with _stdout_to(out):
        levels = asyncio.run(run(config))
    after = scrape_compilations(base_url, args.api_key)
    # The warm-up request is inside the window: a warmed server compiles nothing even for it.
    during = (
        None
        if before is None or after is None
        else Compilations(after.count - before.count, after.seconds - before.seconds)
    )
    report = _report(server, during, levels)
    print(_format_report(report), file=out)
    if args.json == "-":
        print(json.dumps(report, indent=2))
    elif args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
        print(f"results written to {args.json}", file=out)
    failed = sum(summary.failed for summary, _ in levels)
    return 1 if failed else 0


def _report(
    server: StartedServer | None,
    during: Compilations | None,
    levels: list[tuple[LevelSummary, list[RequestResult]]],
) -> dict[str, Any]:
    startup: dict[str, Any] | None = None
    if server is not None:
        log = server.log_path.read_text(errors="replace")
        ready = READY_LINE.search(log)
        warmup = WARMUP_LINE.search(log)
        startup = {
            "healthy_after_s": round(server.startup_s, 1),
            "server_ready_after_s": float(ready.group(1)) if ready else None,
            "step_shapes_compiled": int(warmup.group(1)) if warmup else None,
            "step_shapes_loaded": int(warmup.group(2)) if warmup else None,
            "warmup_s": float(warmup.group(3)) if warmup else None,
        }
    return {
        "startup": startup,
        "compilations_during_benchmark": None if during is None else dataclasses.asdict(during),
        "levels": [dataclasses.asdict(summary) for summary, _ in levels],
    }


def _format_report(report: dict[str, Any]) -> str:
    lines = []
    startup = report["startup"]
    if startup is not None:
        lines.append(
            f"start-up: healthy after {startup['healthy_after_s']} s (server: ready after "
            f"{startup['server_ready_after_s']} s, {startup['step_shapes_compiled']} step shapes compiled and "
            f"{startup['step_shapes_loaded']} loaded from the executable store, warm-up {startup['warmup_s']} s; "
            "a filled cache makes this a warm start)"
        )
    during = report["compilations_during_benchmark"]
    if during is None:
        lines.append("XLA compilations during the benchmark: not reported by this server")
    else:
        lines.append(
            f"XLA compilations during the benchmark: {during['count']:.0f} ({during['seconds']:.1f} s compiling)"
        )
    return "\n".join(lines)


def scrape_compilations(base_url: str, api_key: str | None) -> Compilations | None:
    """The server's compilation counters, or None if it does not export them (not jaxserve)."""
    request = urllib.request.Request(f"{base_url}/metrics")
    if api_key:
        request.add_header("Authorization", f"Bearer {api_key}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            text = response.read().decode()
    except (urllib.error.URLError, TimeoutError):
        return None
    values = metric_totals(text, [COMPILATIONS_METRIC, COMPILE_SECONDS_METRIC])
    if COMPILATIONS_METRIC not in values:
        return None
    return Compilations(values[COMPILATIONS_METRIC], values.get(COMPILE_SECONDS_METRIC, 0.0))


def free_port() -> int:
    """A local TCP port nothing listens on now (the OS's pick)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def started_server(
    model: str | None, serve_args: Sequence[str], api_key: str | None
) -> Iterator[StartedServer]:
    """`jaxserve serve` on a free local port, healthy; stopped with SIGTERM afterwards."""
    port = free_port()
    command = [sys.executable, "-m", "jaxserve.cli", "serve", "--host", "127.0.0.1", "--port", str(port)]
    command += ["--model", model] if model else []
    command += list(serve_args)
    env = dict(os.environ)
    if api_key:
        env["JAXSERVE_API_KEY"] = api_key
    log_path = Path(tempfile.mkdtemp(prefix="jaxserve-bench-")) / "server.log"
    print(f"starting: {shlex.join(command)} (log: {log_path})", file=sys.stderr, flush=True)
    with log_path.open("wb") as log:
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    started = time.perf_counter()
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(base_url, proc, log_path)
        yield StartedServer(base_url, time.perf_counter() - started, log_path)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()


def wait_healthy(base_url: str, proc: subprocess.Popen[bytes], log_path: Path) -> None:
    """Wait until the server `proc` (writing its log to `log_path`) answers /health; exit if it dies."""
    deadline = time.perf_counter() + STARTUP_TIMEOUT_S
    while time.perf_counter() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{base_url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.5)
    raise SystemExit(f"the server was not healthy after {STARTUP_TIMEOUT_S:.0f} s (log: {log_path})")


@contextmanager
def _stdout_to(stream: Any) -> Iterator[None]:
    """The load generator prints its per-level results; with `--json -` they go to stderr instead."""
    saved = sys.stdout
    sys.stdout = stream
    try:
        yield
    finally:
        sys.stdout = saved
