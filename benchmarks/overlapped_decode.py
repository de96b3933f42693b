"""Inter-token gap of the engine with decode steps overlapped (the default) and one step at a time.

    .venv/bin/python benchmarks/overlapped_decode.py [--model PATH] [--rounds 2] [--requests 3]

Runs the real AsyncEngine (no HTTP) over the same runner, alternating the two modes `--rounds` times;
each round sends `--requests` greedy 64-token requests (120-token prompts) one after the other and prints
the median gap between their outputs, and how many steps were dispatched ahead. Printed, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import time

import numpy as np

from jaxserve.engine.async_engine import AsyncEngine
from jaxserve.engine.buckets import BucketConfig
from jaxserve.engine.runner import ModelRunner
from jaxserve.modeling.default_model import default_model_path
from jaxserve.modeling.loader import load_model
from jaxserve.modeling.tokenizer import Tokenizer
from jaxserve.sampling.params import SamplingParams

PARAMS = SamplingParams(temperature=0.0, max_tokens=64, ignore_eos=True)


async def median_gap_ms(engine: AsyncEngine, request_id: str, salt: int) -> float:
    prompt = [5 + (salt * 31 + i * 7) % 250 for i in range(120)]
    arrivals = [time.perf_counter() async for _ in engine.generate(request_id, prompt, PARAMS)]
    return float(np.median(np.diff(arrivals)) * 1e3)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default=None)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--requests", type=int, default=3)
    args = parser.parse_args()
    path = args.model or default_model_path()
    runner = ModelRunner(load_model(path, None), BucketConfig(max_num_seqs=4, max_model_len=1024), 256)
    tokenizer = Tokenizer.from_path(path)
    salt = 0
    for _ in range(args.rounds):
        for overlap in (False, True):
            engine = AsyncEngine(runner, tokenizer, overlap_decode_steps=overlap)
            engine.start()
            try:
                asyncio.run(median_gap_ms(engine, "warm-up", salt))  # compiles on the first round
                gaps = []
                for index in range(args.requests):
                    salt += 1
                    gaps.append(asyncio.run(median_gap_ms(engine, f"r{index}", salt)))
            finally:
                engine.shutdown()
            mode = "overlapped" if overlap else "one at a time"
            print(
                f"{mode:>13}: median inter-token gap {np.median(gaps):5.1f} ms "
                f"({engine.core.num_chained_steps} steps dispatched ahead)",
                flush=True,
            )


if __name__ == "__main__":
    main()
