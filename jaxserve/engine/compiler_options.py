"""XLA options for compiling one model step, chosen per platform, weight format, kernel layout and step shape.

On XLA:CPU, JAX 0.10 hands every eligible dot to YNNPACK (`__ynn_fusion`). Float models on CPU store their
kernels feature-major by default (`jaxserve.modeling.decoder.feature_major_matmul`), and with that layout
YNNPACK was faster than XLA's own (Eigen) dots at every step shape measured but the 32-token prompt chunk,
where it was 2.5% slower (`benchmarks/dot_backends.py --rounds 6`, 200-token contexts, 2-core AVX-512
machine, 2026-11-26), Eigen vs YNNPACK: prompt chunks of 32 / 128 / 512 tokens 114.5 / 435.2 / 1813.3 vs
117.4 / 426.5 / 1243.9 ms (the 128-token chunk with an earlier 64-row limit in feature_major_matmul),
decode steps at batch 1 / 4 / 16 / 64 41.7 / 89.7 / 156.0 / 369.5 vs 40.2 / 59.6 / 117.1 / 365.3 ms.
So such a model always keeps YNNPACK.

A row-major float model ([in, out] kernels: `load_model(feature_major=False)`, or off CPU) keeps the rule
measured for it on an earlier 2-core machine: Eigen from 16 rows, where a batch-16 decode step took 143
instead of 183 ms and a 150-token prefill 428 instead of 558 ms, except decode steps of 32 rows or more,
where the chunked decode attention's batched matmuls (jaxserve.modeling.attention) run much faster with
YNNPACK (batch 32 / 64: 293 / 481 vs 274 / 376 ms). (On this machine YNNPACK won there too: batch 16
184.0 vs 132.9 ms, prompt chunk of 512 tokens 1721.0 vs 1248.3 ms.) The int8 x int8 dots of W8A8 need
YNNPACK at every size: without it a prefill took 1740 instead of 465 ms.
Set per compilation (not through XLA_FLAGS): each step shape gets its own, and one process may hold
several kinds of model, as the tests do.
"""

from __future__ import annotations

from jaxserve.modeling.loader import LoadedModel

CompilerOptions = dict[str, str | bool]

NO_YNNPACK_DOTS: CompilerOptions = {"xla_cpu_experimental_ynn_fusion_type": ""}


EIGEN_DOTS_FROM_ROWS = 16
"""Rows (batch x tokens) from which a row-major float step on CPU is compiled with XLA's own dots..."""

YNNPACK_DECODE_FROM_BATCH = 32
"""...except decode steps (one token per row) of this many rows or more, which keep YNNPACK."""


def step_compiler_options(model: LoadedModel, shape: tuple[int, int, int]) -> CompilerOptions:
    """Options for `Lowered.compile` of this model's (batch, tokens, pages) step: YNNPACK dots off for
    a row-major float model on CPU when the step multiplies 16 rows or more, unless it is a decode step of
    32 rows or more."""
    batch, tokens, _ = shape
    platform = model.mesh.devices.flat[0].platform
    wide_decode = tokens == 1 and batch >= YNNPACK_DECODE_FROM_BATCH
    if (
        platform == "cpu"
        and model.quantization is None
        and not model.feature_major
        and batch * tokens >= EIGEN_DOTS_FROM_ROWS
        and not wide_decode
    ):
        return dict(NO_YNNPACK_DOTS)
    return {}
