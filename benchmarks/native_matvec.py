"""Decode steps at small batches with the native matrix-vector kernel and with XLA's dots, A/B in one
process.

    cd benchmarks && ../.venv/bin/python native_matvec.py [--batch 1 2 4] [--context 200] [--rounds 20]
        [--quantization none]

The evidence behind `jaxserve/modeling/native_matvec.py`. Loads the default model once and builds two
runners, every slot prefilled with the same `--context`-token prompt: one compiled with the native kernel
switched off (`native_matvec.supports` answering no while it compiles), one as served. Times single
decode steps of both alternately (ABBA) and prints the medians; nothing is asserted.
"""

from __future__ import annotations

import argparse
import time

import jax
from prefilled_runner import abba_medians, prefilled_runner  # a sibling module: these scripts run as files

from jaxserve.engine.runner import ModelRunner, RowInput
from jaxserve.modeling import native_matvec
from jaxserve.modeling.default_model import default_model_path
from jaxserve.modeling.loader import load_model
from jaxserve.sampling.params import SamplingParams


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default=None)
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--context", type=int, default=200, help="prompt tokens already in each slot's cache")
    parser.add_argument("--rounds", type=int, default=20, help="timed steps per variant and batch")
    args = parser.parse_args()

    greedy = SamplingParams(temperature=0.0)
    model = load_model(args.model or default_model_path(), "float32")
    prompt = [(17 * i + 3) % model.config.vocab_size for i in range(args.context)]
    runners: dict[str, tuple[ModelRunner, list[list[int]]]] = {}

    def rows(name: str, batch: int) -> list[RowInput]:
        tables = runners[name][1]
        return [RowInput([1], args.context, greedy, 0, 1, i, tables[i]) for i in range(batch)]

    served_supports = native_matvec.supports
    for name in ("xla", "native"):
        jax.clear_caches()  # else the second runner's steps reuse the first one's traces
        if name == "xla":
            native_matvec.supports = lambda *_: False  # type: ignore[assignment]
        runners[name] = prefilled_runner(model, max(args.batch), 512, prompt, greedy)
        for batch in args.batch:  # compiles (and calls once) each decode shape under this variant
            runners[name][0].decode(rows(name, batch))
        native_matvec.supports = served_supports  # type: ignore[assignment]

    for batch in args.batch:

        def step_seconds(name: str, batch: int = batch) -> float:
            start = time.perf_counter()
            runners[name][0].decode(rows(name, batch))
            return time.perf_counter() - start

        medians = abba_medians(step_seconds, list(runners), args.rounds)
        print(
            f"batch {batch:3d}: "
            + "  ".join(f"{name} {seconds * 1e3:7.1f} ms" for name, seconds in medians.items())
        )


if __name__ == "__main__":
    main()
