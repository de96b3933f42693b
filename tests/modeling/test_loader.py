"""The loader's kernel layout: feature-major ([out, in]) float kernels by default on CPU, [in, out] on request
and for int8 kernels."""

from __future__ import annotations

from pathlib import Path

from flax import nnx

from jaxserve.modeling.loader import load_model
from jaxserve.modeling.quantization import Quantization
from tests.modeling.tiny_checkpoints import write_tiny_checkpoint


def test_float_kernels_are_stored_out_by_in_on_cpu_unless_asked_otherwise(tmp_path: Path) -> None:
    directory = write_tiny_checkpoint("qwen3", tmp_path)
    model = load_model(directory, "float32")
    assert model.feature_major
    default = nnx.to_flat_state(model.state)
    row_major = nnx.to_flat_state(load_model(directory, "float32", feature_major=False).state)
    kernels = {
        path: variable for path, variable in default if path[-1].endswith("proj") or path == ("lm_head",)
    }
    assert len(kernels) == 2 * 7 + 1  # two layers of q, k, v, o, gate, up, down, and the LM head
    by_path = dict(row_major)
    for path, variable in kernels.items():
        assert variable.get_metadata().get("feature_major") is True, path
        assert not by_path[path].get_metadata().get("feature_major"), path
        assert variable[...].shape == by_path[path][...].shape[::-1], path
    q_proj = dict(default)[("layers", 0, "attn", "q_proj")][...]
    assert q_proj.shape == (128, 64)  # [4 heads x 32, hidden 64]: as the checkpoint stores it


def test_int8_kernels_stay_in_by_out(tmp_path: Path) -> None:
    directory = write_tiny_checkpoint("qwen3", tmp_path)
    model = load_model(directory, "float32", Quantization("w8a8"))
    assert not model.feature_major
    state = dict(nnx.to_flat_state(model.state))
    assert state[("layers", 0, "attn", "q_proj", "kernel")][...].shape == (64, 128)
    assert state[("layers", 0, "attn", "q_proj", "scale")][...].shape == (128,)
