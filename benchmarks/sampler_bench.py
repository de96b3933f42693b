"""Time one jitted `sample` call per batch size and parameter mix. Results are printed, never asserted.

    .venv/bin/python benchmarks/sampler_bench.py [--vocab 49152] [--repeats 30]

Columns (median ms per call after warm-up; the function is compiled once per batch size, compile time
shown first):
  greedy       every row temperature 0, nothing else: the fused mask + bias + argmax pass
  all          temperature 0.8, top-k 50, top-p 0.9, min-p 0.05, the three penalties, a logit bias,
               a bitmask with banned tokens
  all+lp       the same with logprobs=5 (raw-logit log-probabilities, rank, top-20)
  wide top-p   temperature 1, top-p 0.95 only, on flat logits whose nucleus exceeds the 256 top_k
               candidates: every row takes the exact bisection fallback (the worst case)
Logits are N(0, 3^2) except for the wide top-p column (N(0, 1)).
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxserve.sampling.batch import SamplingBatch
from jaxserve.sampling.bitmask import ban, full_bitmask
from jaxserve.sampling.params import SamplingParams
from jaxserve.sampling.sampler import sample
from jaxserve.sampling.slot_state import SlotSamplingState

BATCHES = (1, 16, 64)
ALL_FEATURES = SamplingParams(
    temperature=0.8,
    top_k=50,
    top_p=0.9,
    min_p=0.05,
    presence_penalty=0.5,
    frequency_penalty=0.5,
    repetition_penalty=1.1,
)
MIXES: dict[str, tuple[SamplingParams, float, bool]] = {
    # name: (params for every row, logit scale, restricted: bitmask bans + bias + penalty state)
    "greedy": (SamplingParams(temperature=0.0), 3.0, False),
    "all": (ALL_FEATURES, 3.0, True),
    "all+lp": (SamplingParams(**{**vars(ALL_FEATURES), "logprobs": 5}), 3.0, True),
    "wide top-p": (SamplingParams(temperature=1.0, top_p=0.95), 1.0, False),
}


def inputs(batch: int, vocab: int, params: SamplingParams, scale: float, restricted: bool) -> tuple:
    rng = np.random.default_rng(0)
    logits = jnp.asarray((rng.normal(size=(batch, vocab)) * scale).astype(np.float32))
    sampling = SamplingBatch.from_params([params] * batch, list(range(batch)), [7] * batch)
    row = (
        ban(full_bitmask(vocab), rng.choice(vocab, 100, replace=False)) if restricted else full_bitmask(vocab)
    )
    bias = np.zeros((batch, vocab), np.float32)
    prompt_mask = np.zeros((batch, vocab), np.bool_)
    counts = np.zeros((batch, vocab), np.int32)
    if restricted:
        bias[:, rng.choice(vocab, 50, replace=False)] = rng.normal(size=50) * 5
        prompt_mask[:, rng.choice(vocab, 300, replace=False)] = True
        counts[:, rng.choice(vocab, 100, replace=False)] = rng.integers(1, 4, size=100)
    if restricted:
        marked = np.ones((batch,), np.bool_)
        sampling = dataclasses.replace(sampling, biased=marked, restricted=marked)
    state = SlotSamplingState(jnp.asarray(bias), jnp.asarray(prompt_mask), jnp.asarray(counts))
    return (
        logits,
        sampling,
        jnp.asarray(np.tile(row, (batch, 1))),
        state,
        jnp.asarray(np.arange(batch, dtype=np.int32)),
    )


def median_ms(fn: Callable[..., object], args: tuple, repeats: int) -> float:
    for _ in range(3):
        jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vocab", type=int, default=49152)
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    print(
        f"jax {jax.__version__} on {jax.devices()[0].platform}, vocab {args.vocab}, median of {args.repeats}"
    )
    header = f"{'batch':>5} {'compile s':>9} " + " ".join(f"{name:>11}" for name in MIXES)
    print(header)
    print("-" * len(header))
    for batch in BATCHES:
        case = {name: inputs(batch, args.vocab, *mix) for name, mix in MIXES.items()}
        start = time.perf_counter()
        compiled = jax.jit(sample).lower(*case["greedy"]).compile()
        compile_s = time.perf_counter() - start
        cells = [f"{median_ms(compiled, case[name], args.repeats):8.2f} ms" for name in MIXES]
        print(f"{batch:>5} {compile_s:>9.1f} " + " ".join(cells))


if __name__ == "__main__":
    main()
