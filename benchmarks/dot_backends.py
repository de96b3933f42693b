"""Decode step time with XLA's own (Eigen) dots and with YNNPACK's, A/B in one process.

    cd benchmarks && ../.venv/bin/python dot_backends.py [--batch 16 32 64] [--context 200] [--rounds 8]

The evidence behind `jaxserve/engine/compiler_options.py`, which picks the dot library per step shape.
Builds two runners on one float model, every slot prefilled with the same `--context`-token prompt: one
whose decode steps compile with YNNPACK's dots off, one with them on (each runner compiles its step when
first called, reading the thresholds in compiler_options then). Times single decode steps of the two
alternately (ABBA) and prints the medians and their ratio; nothing is asserted.
"""

from __future__ import annotations

import argparse
import time
from functools import partial

from prefilled_runner import abba_medians, prefilled_runner  # a sibling module: these scripts run as files

from jaxserve.engine import compiler_options
from jaxserve.engine.runner import ModelRunner, RowInput
from jaxserve.modeling.default_model import default_model_path
from jaxserve.modeling.loader import load_model
from jaxserve.sampling.params import SamplingParams

NEVER = 1 << 30
# (EIGEN_DOTS_FROM_ROWS, YNNPACK_DECODE_FROM_BATCH) that force each library for every decode step here.
BACKENDS = {"eigen": (1, NEVER), "ynnpack": (NEVER, NEVER)}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default=None)
    parser.add_argument("--batch", type=int, nargs="+", default=[16, 32, 64])
    parser.add_argument("--context", type=int, default=200, help="prompt tokens already in each slot's cache")
    parser.add_argument("--rounds", type=int, default=8, help="timed steps per library and batch")
    args = parser.parse_args()

    greedy = SamplingParams(temperature=0.0)
    model = load_model(args.model or default_model_path())
    prompt = [(17 * i + 3) % model.config.vocab_size for i in range(args.context)]
    runners: dict[str, tuple[ModelRunner, list[list[int]]]] = {}
    defaults = (compiler_options.EIGEN_DOTS_FROM_ROWS, compiler_options.YNNPACK_DECODE_FROM_BATCH)

    def rows(name: str, batch: int, position: int) -> list[RowInput]:
        tables = runners[name][1]
        return [RowInput([1], position, greedy, 0, 1, i, tables[i]) for i in range(batch)]

    for name, (eigen_from, ynnpack_from) in BACKENDS.items():
        compiler_options.EIGEN_DOTS_FROM_ROWS = eigen_from
        compiler_options.YNNPACK_DECODE_FROM_BATCH = ynnpack_from
        runners[name] = prefilled_runner(model, max(args.batch), 512, prompt, greedy)
        for batch in args.batch:  # compiles each decode shape under this library's options
            runners[name][0].decode(rows(name, batch, args.context))
    compiler_options.EIGEN_DOTS_FROM_ROWS, compiler_options.YNNPACK_DECODE_FROM_BATCH = defaults

    def step_seconds(batch: int, name: str) -> float:
        batch_rows = rows(name, batch, args.context + 1)
        start = time.perf_counter()
        runners[name][0].decode(batch_rows)
        return time.perf_counter() - start

    print(f"{'batch':>5} {'eigen ms':>9} {'ynnpack ms':>10} {'ynnpack/eigen':>13}")
    for batch in args.batch:
        medians = abba_medians(partial(step_seconds, batch), list(BACKENDS), args.rounds)
        eigen, ynnpack = (medians[name] * 1000 for name in BACKENDS)
        print(f"{batch:>5} {eigen:>9.1f} {ynnpack:>10.1f} {ynnpack / eigen:>13.2f}", flush=True)


if __name__ == "__main__":
    main()
