"""The loader's kernel layout: feature-major ([out, in]) float kernels by default on CPU, with k/v and gate/up
stacked, [in, out] on request and for int8 kernels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from flax import nnx

from jaxserve.modeling.loader import load_model
from jaxserve.modeling.quantization import Quantization
from jaxserve.modeling.weight_map import stacked_parts
from tests.modeling.tiny_checkpoints import write_tiny_checkpoint


def test_float_kernels_are_stored_out_by_in_on_cpu_unless_asked_otherwise(tmp_path: Path) -> None:
    directory = write_tiny_checkpoint("qwen3", tmp_path)
    model = load_model(directory, "float32")
    assert model.feature_major
    default = nnx.to_flat_state(model.state)
    row_major = dict(nnx.to_flat_state(load_model(directory, "float32", feature_major=False).state))
    kernels = {
        path: variable for path, variable in default if path[-1].endswith("proj") or path == ("lm_head",)
    }
    # Two layers of q, stacked k/v, o, stacked gate/up and down, and the LM head.
    assert len(kernels) == 2 * 5 + 1
    for path, variable in kernels.items():
        assert variable.get_metadata().get("feature_major") is True, path
        parts = stacked_parts(".".join(str(p) for p in path))
        members = [path] if parts is None else [(*path[:-1], part.rsplit(".", 1)[1]) for part in parts]
        expected = np.stack([np.asarray(row_major[member][...]).T for member in members])
        assert not row_major[members[0]].get_metadata().get("feature_major"), path
        np.testing.assert_array_equal(np.asarray(variable[...]).reshape(expected.shape), expected, path)
    state = dict(default)
    assert state[("layers", 0, "attn", "q_proj")][...].shape == (128, 64)  # [4 heads x 32, hidden 64]
    assert state[("layers", 0, "attn", "kv_proj")][...].shape == (2, 64, 64)  # k, v: [2 heads x 32, 64]
    assert state[("layers", 0, "mlp", "gate_up_proj")][...].shape == (2, 128, 64)


def test_int8_kernels_stay_in_by_out(tmp_path: Path) -> None:
    directory = write_tiny_checkpoint("qwen3", tmp_path)
    model = load_model(directory, "float32", Quantization("w8a8"))
    assert not model.feature_major
    state = dict(nnx.to_flat_state(model.state))
    assert state[("layers", 0, "attn", "q_proj", "kernel")][...].shape == (64, 128)
    assert state[("layers", 0, "attn", "q_proj", "scale")][...].shape == (128,)
