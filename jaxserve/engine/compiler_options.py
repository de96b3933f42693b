"""XLA options for compiling the model step, chosen per platform and weight format.

On XLA:CPU, JAX 0.10 hands every eligible dot to YNNPACK (`__ynn_fusion`). For float32 SmolLM2-sized
projections that is slower than XLA's own Eigen dots: with YNNPACK dots off, a batch-16 decode step went
from 206 to 174 ms and a 150-token prefill from 558 to 428 ms (`benchmarks/roofline.py --batch 1 16 64`
and a runner prefill timing, 2-core CPU, 2026-11-26). The int8 x int8 dots of W8A8 are the opposite:
without YNNPACK the same prefill took 1740 ms instead of 465 ms, so a quantized model keeps the default.
Set per compilation (not through XLA_FLAGS) so one process may hold both kinds of model, as tests do.
"""

from __future__ import annotations

from jaxserve.modeling.loader import LoadedModel

CompilerOptions = dict[str, str | bool]

NO_YNNPACK_DOTS: CompilerOptions = {"xla_cpu_experimental_ynn_fusion_type": ""}


def step_compiler_options(model: LoadedModel) -> CompilerOptions:
    """Options for `Lowered.compile` of this model's step: YNNPACK dots off for a float model on CPU."""
    platform = model.mesh.devices.flat[0].platform
    if platform == "cpu" and model.quantization is None:
        return dict(NO_YNNPACK_DOTS)
    return {}
