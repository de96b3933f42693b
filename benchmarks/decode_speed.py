"""Decode speed of the model runner: tokens/s per batch size, plus load and compile times.

    python benchmarks/decode_speed.py [--model PATH] [--batch 1 8] [--steps 64] [--context 128]

Runs the same jitted step the server runs (prefill chunk, then decode steps over each sequence's
KV-cache pages), with greedy sampling. Results are printed, never asserted.
"""

from __future__ import annotations

import argparse
import time

from prefilled_runner import prefilled_runner  # a sibling module: these scripts run as files

from jaxserve.engine.runner import RowInput
from jaxserve.modeling.default_model import default_model_path
from jaxserve.modeling.loader import load_model
from jaxserve.sampling.params import SamplingParams


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default=None)
    parser.add_argument("--dtype", default=None)
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--steps", type=int, default=64)
    parser.add_argument("--context", type=int, default=128, help="prompt tokens already in each slot's cache")
    args = parser.parse_args()

    started = time.perf_counter()
    model = load_model(args.model or default_model_path(), args.dtype)
    print(
        f"model loaded in {time.perf_counter() - started:.1f}s ({model.config.architecture}, {model.dtype.__name__})"
    )
    max_batch = max(args.batch)
    greedy = SamplingParams(temperature=0.0)
    prompt = [(17 * i + 3) % model.config.vocab_size for i in range(args.context)]
    runner, tables = prefilled_runner(model, max_batch, 2048, prompt, greedy)

    def rows(tokens: list[int], position: int, generated: int) -> list[RowInput]:
        return [RowInput([t], position, greedy, 0, generated, i, tables[i]) for i, t in enumerate(tokens)]

    print(f"{'batch':>5} {'compile s':>9} {'step ms':>8} {'tok/s':>8}")
    for batch in args.batch:
        tokens = [1] * batch
        compiles_before = runner.compile_seconds
        position = args.context
        runner.decode(rows(tokens, position, 0))  # compile + first run
        compile_s = runner.compile_seconds - compiles_before
        start = time.perf_counter()
        for step in range(args.steps):
            position = args.context + 1 + step
            tokens = [o.token for o in runner.decode(rows(tokens, position, step))]
        elapsed = time.perf_counter() - start
        print(
            f"{batch:>5} {compile_s:>9.1f} {elapsed / args.steps * 1000:>8.1f} {batch * args.steps / elapsed:>8.1f}"
        )


if __name__ == "__main__":
    main()
