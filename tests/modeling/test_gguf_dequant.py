"""K-quant (Q4_K, Q6_K) and other GGUF tensors dequantise to what transformers loads from the same file.

jaxserve dequantises with the `gguf` package (`gguf.quants.dequantize`) and maps names and layouts with the
weight map; transformers reads the file with its own GGUF loader and tensor processors (e.g. Gemma's norm
weights, stored by llama.cpp as 1 + w). The golden records, per tensor, the parameter transformers built:
its shape, sum and values at 64 fixed flat indices. Needs the optional Gemma 3 270M package.
"""

from __future__ import annotations

import numpy as np
import pytest

from jaxserve.modeling.checkpoint import GGUFCheckpoint
from jaxserve.modeling.weight_map import WEIGHT_MAP, apply_transform
from tests.modeling.parity import load_golden

SAMPLES = {sample["gguf_name"]: sample for sample in load_golden("gemma3_gguf.json")["tensor_samples"]}


def test_samples_cover_the_k_quants() -> None:
    assert {"Q4_K", "Q6_K"} <= {sample["quant_type"] for sample in SAMPLES.values()}


@pytest.mark.parametrize("gguf_name", list(SAMPLES))
def test_dequantised_tensor_matches_transformers(gguf_name: str, gemma3_checkpoint: GGUFCheckpoint) -> None:
    checkpoint = gemma3_checkpoint
    sample = SAMPLES[gguf_name]
    assert checkpoint.quant_type(gguf_name) == sample["quant_type"]
    pattern = gguf_name.replace("blk.0.", "blk.{i}.")
    row = next(r for r in WEIGHT_MAP if r.gguf_name == pattern)
    assert row.hf_name.replace("{i}", "0") == sample["hf_name"]
    ours = apply_transform(checkpoint.tensor(gguf_name), row.gguf_transform, checkpoint.config)
    if row.hf_transform == "transpose":  # our kernels are [in, out]; transformers' Linear weights [out, in]
        ours = ours.T
    assert list(ours.shape) == sample["hf_shape"]
    flat = np.ascontiguousarray(ours, dtype=np.float32).reshape(-1)
    np.testing.assert_allclose(flat[sample["indices"]], sample["values"], rtol=0, atol=1e-6)
    # The sum covers every block of the tensor, not just the sampled ones (float64 sums of float32 values).
    assert flat.astype(np.float64).sum() == pytest.approx(sample["sum"], rel=1e-9, abs=1e-6)
