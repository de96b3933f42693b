"""Time to feed a whole prompt under different ways of cutting it into chunks, A/B in one process.

    cd benchmarks && ../.venv/bin/python prefill_chunks.py [--prompts 141 1024 2048] [--rounds 4]
        [--quantization int8]

The evidence behind `jaxserve/engine/buckets.py`: the per-chunk cost in `chunk_overhead_tokens` (the
single-chunk times printed first) and the chunk sizes compiled on CPU (`CPU_PREFILL_CHUNK_SIZES`). Each
plan feeds the prompt from position 0 into one sequence's pages, chunk by chunk, through the real runner:

- "one chunk": as many tokens as the largest chunk size takes, padded up to a chunk size (the policy
  before chunk_for planned its chunks);
- "planned" / "planned, no 512": `BucketConfig.chunk_for` with chunk sizes 16/32/128/512 and 16/32/128.

Plans and chunk sizes are timed alternately (ABBA); medians are printed, nothing is asserted.
"""

from __future__ import annotations

import argparse
import time

from prefilled_runner import abba_medians  # a sibling module: these scripts run as files

from jaxserve.engine.buckets import BucketConfig
from jaxserve.engine.runner import ModelRunner, RowInput
from jaxserve.modeling.default_model import default_model_path
from jaxserve.modeling.loader import load_model
from jaxserve.modeling.quantization import QUANTIZATION_CHOICES, resolve_quantization
from jaxserve.sampling.params import SamplingParams

PARAMS = SamplingParams(temperature=0.0)
ALL_SIZES = (16, 32, 128, 512)


def cut(remaining: int, plan: str, buckets: dict[str, BucketConfig]) -> list[int]:
    """The chunk sizes `plan` feeds a `remaining`-token prompt in."""
    chunks = []
    while remaining:
        chunk = min(remaining, ALL_SIZES[-1]) if plan == "one chunk" else buckets[plan].chunk_for(remaining)
        chunks.append(chunk)
        remaining -= chunk
    return chunks


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--prompts", type=int, nargs="+", default=[141, 1024, 2048])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--quantization", choices=QUANTIZATION_CHOICES, default=None)
    args = parser.parse_args()
    max_model_len = max(max(args.prompts), ALL_SIZES[-1])
    model = load_model(default_model_path(), None, resolve_quantization(args.quantization))
    buckets = {
        "planned": BucketConfig(max_num_seqs=1, max_model_len=max_model_len, prefill_chunk_sizes=ALL_SIZES),
        "planned, no 512": BucketConfig(
            max_num_seqs=1, max_model_len=max_model_len, prefill_chunk_sizes=ALL_SIZES[:-1]
        ),
    }
    runner = ModelRunner(model, buckets["planned"], buckets["planned"].max_pages_per_seq)
    table = list(range(runner.num_pages))
    runner.start_sequence(0, PARAMS, [1], [])
    prompt = [5 + (i * 7) % 250 for i in range(max_model_len)]

    def feed_ms(chunks: list[int]) -> float:
        begin = time.perf_counter()
        start = 0
        for chunk in chunks:
            runner.prefill_chunk(RowInput(prompt[start : start + chunk], start, PARAMS, 0, 0, 0, table))
            start += chunk
        return (time.perf_counter() - begin) * 1e3

    single = {f"{size} tokens": [size] for size in ALL_SIZES}
    for chunks in single.values():
        feed_ms(chunks)  # compiles
    medians = abba_medians(lambda name: feed_ms(single[name]), list(single), args.rounds)
    print("one chunk from position 0: " + ", ".join(f"{name} {ms:.1f} ms" for name, ms in medians.items()))
    for length in args.prompts:
        plans = {plan: cut(length, plan, buckets) for plan in ("one chunk", "planned", "planned, no 512")}
        for chunks in plans.values():
            feed_ms(chunks)
        medians = abba_medians(lambda plan: feed_ms(plans[plan]), list(plans), args.rounds)  # noqa: B023
        for plan, ms in medians.items():
            print(f"{length:5d}-token prompt, {plan:>15}: {ms:8.1f} ms  (chunks {plans[plan]})", flush=True)


if __name__ == "__main__":
    main()
