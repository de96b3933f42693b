"""How fast a freshly started server answers: sequential requests from the moment it reports healthy.

    .venv/bin/python benchmarks/first_requests.py [--requests 14] [-- SERVE ARGS...]

Starts `jaxserve serve --max-num-seqs 64 SERVE_ARGS` on a free port, waits for /health, then sends
`--requests` streamed chat requests one after the other (100-word prompts as the load generator builds
them, 64 tokens each with ignore_eos) and prints, per request, when it started after "ready", its TTFT,
its mean inter-token gap and its tokens/s. A warm start (filled executable store) shows what the
background step loads cost the first requests. Results are printed, never asserted.
"""

from __future__ import annotations

import argparse
import json
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from jaxserve.bench.load_generator import LoadConfig, build_messages


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=14)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("serve_args", nargs="*", help="extra `jaxserve serve` arguments (after --)")
    args = parser.parse_args()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    log_path = Path(tempfile.mkdtemp(prefix="first-requests-")) / "server.log"
    command = [sys.executable, "-m", "jaxserve.cli", "serve", "--port", str(port), "--max-num-seqs", "64"]
    started = time.perf_counter()
    with log_path.open("wb") as log:
        server = subprocess.Popen([*command, *args.serve_args], stdout=log, stderr=subprocess.STDOUT)
    try:
        while True:
            if server.poll() is not None:
                raise SystemExit(f"the server exited; log: {log_path}")
            try:
                urllib.request.urlopen(f"{url}/health", timeout=2)
                break
            except OSError:
                time.sleep(0.2)
        ready = time.perf_counter()
        print(f"healthy after {ready - started:.1f} s (log: {log_path})")
        with urllib.request.urlopen(f"{url}/v1/models") as response:
            model = json.load(response)["data"][0]["id"]
        config = LoadConfig(prompt_words=100)
        for index in range(args.requests):
            body = {
                "model": model,
                "messages": build_messages(config, index, ""),
                "max_tokens": args.max_tokens,
                "stream": True,
                "ignore_eos": True,
            }
            request = urllib.request.Request(
                f"{url}/v1/chat/completions",
                data=json.dumps(body).encode(),
                headers={"Content-Type": "application/json"},
            )
            sent = time.perf_counter()
            with urllib.request.urlopen(request) as response:
                arrivals = [
                    time.perf_counter() - sent
                    for line in response
                    if line.startswith(b"data:") and b'"content"' in line
                ]
            gap = (arrivals[-1] - arrivals[0]) / max(1, len(arrivals) - 1)
            print(
                f"t+{sent - ready:5.1f} s  TTFT {arrivals[0] * 1e3:5.0f} ms  ITL {gap * 1e3:5.1f} ms  "
                f"{len(arrivals) / (time.perf_counter() - sent):5.1f} tok/s",
                flush=True,
            )
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=60)


if __name__ == "__main__":
    main()
