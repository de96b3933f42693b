"""Decode step time with each CPU attention implementation, A/B in one process.

    cd benchmarks && ../.venv/bin/python attention_impls.py [--batch 16 64] [--context 200] [--rounds 8]

Loads the model once per implementation ("reference" and "auto", which is the chunked decode path on
CPU), builds a runner for each with every slot prefilled with the same `--context`-token prompt,
then times single decode steps of the two runners alternately (ABBA order), so a machine whose speed
drifts during the run slows both alike. Prints the median step time of each and their ratio; nothing is
asserted.
"""

from __future__ import annotations

import argparse
import time
from functools import partial

from prefilled_runner import abba_medians, prefilled_runner  # a sibling module: these scripts run as files

from jaxserve.engine.runner import ModelRunner, RowInput
from jaxserve.modeling.attention import AttentionImpl
from jaxserve.modeling.default_model import default_model_path
from jaxserve.modeling.loader import load_model
from jaxserve.sampling.params import SamplingParams

IMPLS: tuple[AttentionImpl, AttentionImpl] = ("reference", "auto")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default=None)
    parser.add_argument("--batch", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--context", type=int, default=200, help="prompt tokens already in each slot's cache")
    parser.add_argument("--rounds", type=int, default=8, help="timed steps per implementation and batch")
    args = parser.parse_args()

    greedy = SamplingParams(temperature=0.0)
    path = args.model or default_model_path()
    runners: dict[str, tuple[ModelRunner, list[list[int]]]] = {}
    for impl in IMPLS:
        model = load_model(path, attention_impl=impl)
        prompt = [(17 * i + 3) % model.config.vocab_size for i in range(args.context)]
        runners[impl] = prefilled_runner(model, max(args.batch), 512, prompt, greedy)

    def step_seconds(batch: int, position: int, impl: str) -> float:
        runner, tables = runners[impl]
        rows = [RowInput([1], position, greedy, 0, 1, i, tables[i]) for i in range(batch)]
        start = time.perf_counter()
        runner.decode(rows)
        return time.perf_counter() - start

    print(f"{'batch':>5} {'reference ms':>12} {'auto ms':>8} {'auto/ref':>8}")
    for batch in args.batch:
        for impl in IMPLS:
            step_seconds(batch, args.context, impl)  # compiles this shape
        medians = abba_medians(partial(step_seconds, batch, args.context + 1), IMPLS, args.rounds)
        ref, auto = (medians[impl] * 1000 for impl in IMPLS)
        print(f"{batch:>5} {ref:>12.1f} {auto:>8.1f} {auto / ref:>8.2f}", flush=True)


if __name__ == "__main__":
    main()
