"""This machine's limits for decoding the model, and how close jaxserve's decode step comes to them.

    .venv/bin/python benchmarks/roofline.py [--model PATH] [--batch 1 16 64] [--context 128]

Measures, with jitted JAX on the default backend:
  read bandwidth   a sum over a 1 GiB float32 array (every byte read once per pass)
  matmul FLOP/s    a float32 [N, N] x [N, N] matmul (N = 2048)
Then, for the model's weight bytes W and parameter count P, a decode step of batch B must at least
  read every weight once:         W / bandwidth seconds     (the memory bound, which rules at small B)
  do 2 * P * B multiply-adds:     2 P B / FLOP/s seconds    (the compute bound, which rules at large B)
and prints, per batch size, the bound (the larger of the two), the measured step time of jaxserve's runner
(the same jitted step the server runs, KV cache included), and the fraction of the bound reached.
KV-cache reads and attention are left out of the bound, so at long contexts the fraction is an
understatement. Results are printed, never asserted.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from prefilled_runner import prefilled_runner  # a sibling module: these scripts run as files

from jaxserve.engine.runner import RowInput
from jaxserve.modeling.default_model import default_model_path
from jaxserve.modeling.loader import load_model
from jaxserve.modeling.quantization import QUANTIZATION_CHOICES, resolve_quantization
from jaxserve.sampling.params import SamplingParams

BANDWIDTH_BYTES = 1 << 30
MATMUL_N = 2048


def best_seconds(run: Callable[[], jax.Array], repeats: int) -> float:
    """The fastest of `repeats` timed runs after one warm-up run (the least disturbed by other work)."""
    run().block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run().block_until_ready()
        best = min(best, time.perf_counter() - start)
    return best


def read_bandwidth() -> float:
    """Bytes per second a jitted reduction reads from memory."""
    data = jnp.ones(BANDWIDTH_BYTES // 4, jnp.float32)
    total = jax.jit(jnp.sum)
    return BANDWIDTH_BYTES / best_seconds(lambda: total(data), repeats=5)


def matmul_flops() -> float:
    """float32 multiply-add FLOP/s of one large jitted matmul."""
    key_a, key_b = jax.random.split(jax.random.key(0))
    a = jax.random.normal(key_a, (MATMUL_N, MATMUL_N), jnp.float32)
    b = jax.random.normal(key_b, (MATMUL_N, MATMUL_N), jnp.float32)
    product = jax.jit(jnp.matmul)
    return 2 * MATMUL_N**3 / best_seconds(lambda: product(a, b), repeats=5)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default=None)
    parser.add_argument("--dtype", default=None)
    parser.add_argument("--quantization", choices=QUANTIZATION_CHOICES, default=None)
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--context", type=int, default=128, help="prompt tokens already in each slot's cache")
    args = parser.parse_args()

    print(f"backend {jax.default_backend()}, {jax.device_count()} device(s)")
    bandwidth = read_bandwidth()
    flops = matmul_flops()
    print(f"read bandwidth   {bandwidth / 1e9:8.1f} GB/s")
    print(f"matmul float32   {flops / 1e9:8.1f} GFLOP/s")

    model = load_model(
        args.model or default_model_path(), args.dtype, resolve_quantization(args.quantization)
    )
    leaves = jax.tree.leaves(model.state)
    weight_bytes = sum(int(np.prod(leaf.shape)) * leaf.dtype.itemsize for leaf in leaves)
    params = sum(int(np.prod(leaf.shape)) for leaf in leaves)
    print(
        f"model            {params / 1e6:8.1f} M parameters, {weight_bytes / 2**20:.0f} MiB as {model.dtype.__name__}"
        + (f", int8 {model.quantization.method}" if model.quantization else "")
    )

    greedy = SamplingParams(temperature=0.0)
    prompt = [(17 * i + 3) % model.config.vocab_size for i in range(args.context)]
    runner, tables = prefilled_runner(model, max(args.batch), 1024, prompt, greedy)
    print(
        f"\n{'batch':>5} {'bound ms':>9} {'(memory/compute)':>17} {'step ms':>8} {'tok/s':>8} {'bound tok/s':>12} {'fraction':>9}"
    )
    for batch in args.batch:
        memory_s = weight_bytes / bandwidth
        compute_s = 2 * params * batch / flops
        bound_s = max(memory_s, compute_s)
        tokens = [1] * batch

        def rows(position: int, step: int, tokens: list[int] = tokens) -> list[RowInput]:
            return [RowInput([t], position, greedy, 0, step, i, tables[i]) for i, t in enumerate(tokens)]

        runner.decode(rows(args.context, 0))  # compile and first run
        start = time.perf_counter()
        for step in range(args.steps):
            tokens = [o.token for o in runner.decode(rows(args.context + 1 + step, step, tokens))]
        step_s = (time.perf_counter() - start) / args.steps
        kind = "memory" if memory_s >= compute_s else "compute"
        print(
            f"{batch:>5} {bound_s * 1e3:>9.1f} {kind:>17} {step_s * 1e3:>8.1f} {batch / step_s:>8.1f} "
            f"{batch / bound_s:>12.1f} {bound_s / step_s:>9.0%}"
        )


if __name__ == "__main__":
    main()
