"""Cost of the chat-template sandbox: worker start-up, render latency against in-process, worker memory.

    python benchmarks/template_sandbox.py [--renders 50] [--turns 4]

Renders the default model's own template (sent as a request's chat_template, so through the sandbox) and
the same template in-process, then reads the worker's resident and virtual memory from /proc. Results are
printed, never asserted.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from jaxserve.modeling.default_model import default_model_path
from jaxserve.modeling.tokenizer import Tokenizer


def proc_status(pid: int) -> dict[str, str]:
    """The memory lines of /proc/<pid>/status."""
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {
        k: v.strip() for k, v in (line.split(":", 1) for line in lines) if k in ("VmRSS", "VmHWM", "VmSize")
    }


def median_ms(render: object, count: int) -> float:
    times = []
    for _ in range(count):
        started = time.perf_counter()
        render()  # type: ignore[operator]
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--renders", type=int, default=50)
    parser.add_argument("--turns", type=int, default=4, help="user/assistant turn pairs in the conversation")
    args = parser.parse_args()

    tokenizer = Tokenizer.from_path(default_model_path())
    template = tokenizer.chat_template
    messages = [{"role": "system", "content": "You are terse."}]
    for turn in range(args.turns):
        messages += [
            {"role": "user", "content": f"Question {turn}: what is {turn} + {turn}?"},
            {"role": "assistant", "content": f"{turn + turn}."},
        ]
    messages.append({"role": "user", "content": "Thanks!"})
    try:
        started = time.perf_counter()
        tokenizer.render_chat(messages, chat_template=template)
        print(f"first sandboxed render (worker start-up included): {time.perf_counter() - started:.2f} s")
        sandboxed = median_ms(lambda: tokenizer.render_chat(messages, chat_template=template), args.renders)
        in_process = median_ms(lambda: tokenizer.render_chat(messages), args.renders)
        print(f"median of {args.renders} renders: sandbox {sandboxed:.2f} ms, in-process {in_process:.2f} ms")
        for pid in tokenizer.template_sandbox.worker_pids():
            print(f"worker {pid}: {proc_status(pid)}")
    finally:
        tokenizer.close()


if __name__ == "__main__":  # required: the sandbox's spawned workers import this file as their __main__
    main()
