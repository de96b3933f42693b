"""Decode step time with two CPU attention implementations, A/B in one process.

    cd benchmarks && ../.venv/bin/python attention_impls.py [--impls chunked native] [--batch 16 64]
        [--context 200] [--rounds 8] [--prefill 128]

Loads the model once per implementation (`--impls`, two of "reference", "chunked", "native", "auto"),
builds a runner for each with every slot prefilled with the same `--context`-token prompt, then times
single decode steps of the two runners alternately (ABBA order), so a machine whose speed drifts during
the run slows both alike. With `--prefill N`, also times a prompt chunk of N tokens that continues slot 0's
first 32 cached tokens (as a chat prompt continues its cached template). Prints the median step time of
each and their ratio; nothing is asserted.
"""

from __future__ import annotations

import argparse
import time
from functools import partial

from prefilled_runner import abba_medians, prefilled_runner  # a sibling module: these scripts run as files

from jaxserve.engine.runner import ModelRunner, RowInput
from jaxserve.modeling.attention import ATTENTION_IMPLS, AttentionImpl
from jaxserve.modeling.default_model import default_model_path
from jaxserve.modeling.loader import load_model
from jaxserve.sampling.params import SamplingParams

PREFIX = 32  # cached tokens a timed prompt chunk continues


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default=None)
    parser.add_argument("--impls", nargs=2, choices=ATTENTION_IMPLS, default=["chunked", "native"])
    parser.add_argument("--batch", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--context", type=int, default=200, help="prompt tokens already in each slot's cache")
    parser.add_argument("--rounds", type=int, default=8, help="timed steps per implementation and batch")
    parser.add_argument("--prefill", type=int, nargs="*", default=[], help="prompt chunk sizes to time too")
    args = parser.parse_args()

    greedy = SamplingParams(temperature=0.0)
    path = args.model or default_model_path()
    runners: dict[str, tuple[ModelRunner, list[list[int]]]] = {}
    impls: tuple[AttentionImpl, AttentionImpl] = tuple(args.impls)  # type: ignore[assignment]
    for impl in impls:
        model = load_model(path, attention_impl=impl)
        prompt = [(17 * i + 3) % model.config.vocab_size for i in range(args.context)]
        runners[impl] = prefilled_runner(model, max(args.batch), 512, prompt, greedy)

    def step_seconds(batch: int, position: int, impl: str) -> float:
        runner, tables = runners[impl]
        rows = [RowInput([1], position, greedy, 0, 1, i, tables[i]) for i in range(batch)]
        start = time.perf_counter()
        runner.decode(rows)
        return time.perf_counter() - start

    first, second = impls
    print(f"{'batch':>5} {first + ' ms':>14} {second + ' ms':>14} {'ratio':>6}")
    for batch in args.batch:
        for impl in impls:
            step_seconds(batch, args.context, impl)  # compiles this shape
        medians = abba_medians(partial(step_seconds, batch, args.context + 1), impls, args.rounds)
        a, b = (medians[impl] * 1000 for impl in impls)
        print(f"{batch:>5} {a:>14.1f} {b:>14.1f} {b / a:>6.2f}", flush=True)

    def chunk_seconds(size: int, impl: str) -> float:
        runner, tables = runners[impl]
        tokens = [(11 * i + 5) % 250 for i in range(size)]
        start = time.perf_counter()
        runner.prefill_chunk(RowInput(tokens, PREFIX, greedy, 0, 0, 0, tables[0]))
        return time.perf_counter() - start

    for size in args.prefill:
        for impl in impls:
            chunk_seconds(size, impl)  # compiles this shape
        medians = abba_medians(partial(chunk_seconds, size), impls, args.rounds)
        a, b = (medians[impl] * 1000 for impl in impls)
        print(f"prompt chunk of {size} at {PREFIX}: {a:.1f} vs {b:.1f} ms, ratio {b / a:.2f}", flush=True)


if __name__ == "__main__":
    main()
