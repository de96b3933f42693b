"""XLA options for compiling one model step, chosen per platform, weight format and step shape.

On XLA:CPU, JAX 0.10 hands every eligible dot to YNNPACK (`__ynn_fusion`). For float32 SmolLM2-sized
projections with 16 rows or more, XLA's own (Eigen) dots are faster: a batch-16 decode step took 143
instead of 183 ms and a 150-token prefill 428 instead of 558 ms. With 2 to 4 rows Eigen is far slower
(165 instead of 58 ms at batch 2, 167 instead of 80 ms at batch 4); at 1 and 8 rows they tie. (Runner
decode steps over a 128-token context, 2-core CPU, 2026-11-26.) The int8 x int8 dots of W8A8 need
YNNPACK at every size: without it the same prefill took 1740 instead of 465 ms.
With the chunked decode attention (jaxserve.modeling.attention), YNNPACK's batched attention matmuls are
much faster than Eigen's, and from 32 decode rows that outweighs Eigen's lead on the projections
(`benchmarks/dot_backends.py`, runner decode steps, Eigen vs YNNPACK dots): batch 16 / 32 / 64 over
200-token contexts 174 / 293 / 481 vs 202 / 274 / 376 ms, and 181 / 327 / 636 vs 194 / 285 / 466 ms in a
second run; over 60-token contexts at 32 / 64 rows 230 / 321 vs 208 / 299 ms.
Set per compilation (not through XLA_FLAGS): each step shape gets its own, and one process may hold
both kinds of model, as the tests do.
"""

from __future__ import annotations

from jaxserve.modeling.loader import LoadedModel

CompilerOptions = dict[str, str | bool]

NO_YNNPACK_DOTS: CompilerOptions = {"xla_cpu_experimental_ynn_fusion_type": ""}


EIGEN_DOTS_FROM_ROWS = 16
"""Rows (batch x tokens) from which a float step on CPU is compiled with XLA's own dots..."""

YNNPACK_DECODE_FROM_BATCH = 32
"""...except decode steps (one token per row) of this many rows or more, which keep YNNPACK."""


def step_compiler_options(model: LoadedModel, shape: tuple[int, int, int]) -> CompilerOptions:
    """Options for `Lowered.compile` of this model's (batch, tokens, pages) step: YNNPACK dots off for
    a float model on CPU when the step multiplies 16 rows or more, unless it is a decode step of 32 rows
    or more."""
    batch, tokens, _ = shape
    platform = model.mesh.devices.flat[0].platform
    wide_decode = tokens == 1 and batch >= YNNPACK_DECODE_FROM_BATCH
    if (
        platform == "cpu"
        and model.quantization is None
        and batch * tokens >= EIGEN_DOTS_FROM_ROWS
        and not wide_decode
    ):
        return dict(NO_YNNPACK_DOTS)
    return {}
