"""Where a decode step's time goes: a `jax.profiler` trace of the runner's decode steps, summarised by op.

    cd benchmarks && ../.venv/bin/python profile_decode.py [--batch 1] [--steps 16] [--context 128]
    cd benchmarks && ../.venv/bin/python profile_decode.py --prefill 128 [--batch 4] [--steps 8]

Runs `--steps` decode steps of the same jitted step the server runs (prefilled KV cache, greedy), or with
`--prefill N` steps of `--batch` prompt chunks of N tokens (each a fresh prompt from position 0), under
`jax.profiler.trace` with a Perfetto trace, then reads the trace back and prints:
  - the wall time per step, and how much of it XLA spent in ops (the rest is host work and dispatch);
  - the ops that took the most time, grouped by HLO op name without its numeric suffix
    (`dot.12` -> `dot`, `fusion.3` -> `fusion`), with their share of the op time.
The trace directory is kept (path printed) for a look in Perfetto (ui.perfetto.dev) or TensorBoard.
"""

from __future__ import annotations

import argparse
import collections
import gzip
import json
import re
import tempfile
import time
from pathlib import Path

import jax
from prefilled_runner import prefilled_runner  # a sibling module: these scripts run as files

from jaxserve.engine.runner import RowInput
from jaxserve.modeling.default_model import default_model_path
from jaxserve.modeling.loader import load_model
from jaxserve.modeling.quantization import QUANTIZATION_CHOICES, resolve_quantization
from jaxserve.sampling.params import SamplingParams

SUFFIX = re.compile(r"[._]\d+$")


def op_durations(trace_dir: Path) -> tuple[collections.Counter[str], float]:
    """Microseconds per op group over every XLA op event in the trace, and their total."""
    traces = sorted(trace_dir.rglob("*.trace.json.gz"))
    if not traces:
        raise SystemExit(f"no Perfetto trace under {trace_dir}")
    events = json.loads(gzip.decompress(traces[-1].read_bytes()))
    events = events["traceEvents"] if isinstance(events, dict) else events
    threads = {
        (e.get("pid"), e.get("tid")): e.get("args", {}).get("name", "")
        for e in events
        if e.get("ph") == "M" and e.get("name") == "thread_name"
    }
    totals: collections.Counter[str] = collections.Counter()
    for event in events:
        if event.get("ph") != "X":
            continue
        thread = threads.get((event.get("pid"), event.get("tid")), "")
        # XLA:CPU ops run on the executor's threads; Python and dispatch spans are on the main thread.
        if "python" in thread.lower() or event.get("name", "").startswith(("$", "PjitFunction", "jit_")):
            continue
        name = str(event.get("name", ""))
        if not name or " " in name:
            continue
        totals[SUFFIX.sub("", name)] += float(event.get("dur", 0.0))
    return totals, float(sum(totals.values()))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default=None)
    parser.add_argument("--dtype", default=None)
    parser.add_argument("--quantization", choices=QUANTIZATION_CHOICES, default=None)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--context", type=int, default=128)
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--prefill", type=int, default=0, help="profile prompt chunks of this many tokens")
    args = parser.parse_args()

    model = load_model(
        args.model or default_model_path(), args.dtype, resolve_quantization(args.quantization)
    )
    greedy = SamplingParams(temperature=0.0)
    prompt = [(17 * i + 3) % model.config.vocab_size for i in range(args.context)]
    runner, tables = prefilled_runner(model, args.batch, 1024, prompt, greedy)
    tokens = [1] * args.batch

    def step(index: int) -> None:
        nonlocal tokens
        if args.prefill:
            chunks = [
                [(31 * (i + index) + 7 * row) % model.config.vocab_size for i in range(args.prefill)]
                for row in range(args.batch)
            ]
            runner.prefill_chunks(
                [RowInput(chunk, 0, greedy, 0, index, row, tables[row]) for row, chunk in enumerate(chunks)]
            )
            return
        position = args.context + index
        rows = [RowInput([t], position, greedy, 0, index, i, tables[i]) for i, t in enumerate(tokens)]
        tokens = [o.token for o in runner.decode(rows)]

    step(0)  # compile and first run, outside the trace
    trace_dir = Path(tempfile.mkdtemp(prefix="jaxserve-profile-"))
    with jax.profiler.trace(str(trace_dir), create_perfetto_trace=True):
        start = time.perf_counter()
        for index in range(1, args.steps + 1):
            step(index)
        wall_s = time.perf_counter() - start
    totals, op_us = op_durations(trace_dir)
    step_ms = wall_s / args.steps * 1e3
    op_ms = op_us / args.steps / 1e3
    shape = (
        f"{args.batch} prompt chunk(s) of {args.prefill}"
        if args.prefill
        else f"batch {args.batch}, context {args.context}"
    )
    print(f"{shape}: {step_ms:.1f} ms per step (traced)")
    print(
        f"XLA op time {op_ms:.1f} ms per step (ops on parallel threads add up, so this can exceed wall time)"
    )
    print(f"\n{'op':<40} {'ms/step':>8} {'share':>6}")
    for name, micros in totals.most_common(args.top):
        print(f"{name:<40} {micros / args.steps / 1e3:>8.2f} {micros / op_us:>6.0%}")
    print(f"\ntrace: {trace_dir}")


if __name__ == "__main__":
    main()
