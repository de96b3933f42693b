"""Greedy continuations of llama.cpp's llama-server on the golden prompts, against the golden (transformers,
float32): how often an 8-bit llama.cpp model keeps float32's output, for comparison with jaxserve's W8A8.

    cd benchmarks && ../.venv/bin/python llamacpp_parity.py \\
        --llama-server ~/.cache/jaxserve-bench/llama-cpp-python-0.3.36/build/bin/llama-server \\
        --models ~/.cache/jaxserve-bench/models/SmolLM2-135M-Instruct.Q4_1-F32.gguf \\
                 ~/.cache/jaxserve-bench/models/SmolLM2-135M-Instruct.Q4_1-Q8_0.gguf

`compare_llamacpp.sh` builds llama-server and converts the default GGUF into those two files. For each
model file it starts llama-server, sends every golden prompt of `tests/goldens/smollm2_gguf.json` as token
ids (`/completion`, greedy, the golden's 32 tokens, no early end) and prints where each continuation first
differs from the golden's, and how many match in full and in their first token. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import urllib.request
from pathlib import Path

from jaxserve.bench.command import free_port, wait_healthy

GOLDEN = Path(__file__).resolve().parent.parent / "tests" / "goldens" / "smollm2_gguf.json"


def post(url: str, body: dict[str, object]) -> dict[str, object]:
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=300) as response:
        return json.loads(response.read())  # type: ignore[no-any-return]


def first_divergence(ours: list[int], expected: list[int]) -> int | None:
    return next((i for i, (a, b) in enumerate(zip(ours, expected, strict=True)) if a != b), None)


def continuations(server_path: str, model: str, cases: list[dict[str, object]]) -> list[list[int]]:
    port = free_port()
    command = [server_path, "-m", model, "--host", "127.0.0.1", "--port", str(port), "-c", "2048", "-np", "1"]
    log_path = Path(tempfile.mkdtemp(prefix="llamacpp-parity-")) / "llama-server.log"
    with log_path.open("wb") as log:
        server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, server, log_path)
        out = []
        for case in cases:
            expected = case["greedy_continuation"]
            assert isinstance(expected, list)
            body = {
                "prompt": case["prompt_ids"],
                "n_predict": len(expected),
                "temperature": 0.0,
                "top_k": 1,
                "ignore_eos": True,
                "cache_prompt": False,
                "return_tokens": True,
            }
            tokens = post(f"{url}/completion", body)["tokens"]
            assert isinstance(tokens, list)
            out.append([int(t) for t in tokens])
        return out
    finally:
        server.terminate()
        server.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--llama-server", required=True)
    parser.add_argument("--models", nargs="+", required=True, help="GGUF files, each run in turn")
    args = parser.parse_args()
    cases = json.loads(GOLDEN.read_text())["cases"]
    for model in args.models:
        divergences = []
        for case, ours in zip(cases, continuations(args.llama_server, model, cases), strict=True):
            divergences.append(first_divergence(ours, case["greedy_continuation"]))
        full = sum(d is None for d in divergences)
        first = sum(d != 0 for d in divergences)
        shown = ["-" if d is None else str(d) for d in divergences]
        print(
            f"{Path(model).name}: {full}/{len(cases)} continuations equal the golden in full, first token "
            f"{first}/{len(cases)}; first divergences [{', '.join(shown)}]"
        )


if __name__ == "__main__":
    main()
