"""Where weights, the KV pool and step inputs land on a (data, model) mesh of the suite's 8 CPU devices."""

from __future__ import annotations

import re
from pathlib import Path

import jax
import numpy as np
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

from jaxserve.engine.buckets import BucketConfig
from jaxserve.engine.runner import ModelRunner
from jaxserve.modeling.loader import load_model
from jaxserve.modeling.sharding import ParallelConfig, batch_sharding, logical_spec
from jaxserve.modeling.weight_map import stacked_parts
from tests.modeling.tiny_checkpoints import write_tiny_checkpoint

# The tiny llama3 family: 4 query heads, 2 KV heads, MLP 128, vocabulary 256, untied LM head.
EXPECTED_SPECS = {
    # tensor parallel 2: every split divides
    2: {
        "embedding": P("model", None),
        "lm_head": P(None, "model"),
        "layers.0.attn.q_proj": P(None, "model"),
        "layers.0.attn.k_proj": P(None, "model"),
        "layers.0.attn.v_proj": P(None, "model"),
        "layers.0.attn.o_proj": P("model", None),
        "layers.0.mlp.gate_proj": P(None, "model"),
        "layers.0.mlp.up_proj": P(None, "model"),
        "layers.0.mlp.down_proj": P("model", None),
        "layers.0.input_norm.weight": P(None),
    },
    # 4: one query head per device; 2 KV heads cannot split 4 ways, so K/V are replicated
    4: {
        "layers.0.attn.q_proj": P(None, "model"),
        "layers.0.attn.k_proj": P(None, None),
        "layers.0.attn.v_proj": P(None, None),
        "layers.0.attn.o_proj": P("model", None),
        "layers.0.mlp.down_proj": P("model", None),
    },
    # 8: the query heads are replicated too; MLP and vocabulary still split
    8: {
        "layers.0.attn.q_proj": P(None, None),
        "layers.0.attn.o_proj": P(None, None),
        "layers.0.mlp.gate_proj": P(None, "model"),
        "embedding": P("model", None),
    },
}

KV_POOL_SPECS = {1: P(None, None, None, None), 2: P(None, None, "model", None), 4: P(None, None, None, None)}


@pytest.fixture(scope="module")
def llama3_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory: Path = tmp_path_factory.mktemp("tiny_llama3")
    write_tiny_checkpoint("llama3", directory)
    return directory


def small_runner(model_dir: Path, tp: int, dp: int = 1) -> ModelRunner:
    model = load_model(model_dir, "float32", mesh=ParallelConfig(tp, dp).build_mesh())
    buckets = BucketConfig(
        max_num_seqs=4,
        max_model_len=64,
        page_size=16,
        prefill_chunk_sizes=(8,),
        max_num_batched_tokens=8,
        min_kv_len=64,
    )
    return ModelRunner(model, buckets, 16)


def param_specs(runner: ModelRunner) -> dict[str, P]:
    """Each parameter's partition spec, reversed for a kernel stored feature-major ([out, in], the CPU
    default), so EXPECTED_SPECS describes both layouts in [in, out] order. A stacked kernel ([parts, out,
    in], never split along parts) gives each part the spec of its [out, in] slice."""
    specs = {}
    for path, variable in nnx.to_flat_state(runner.model.state):
        name = ".".join(str(p) for p in path)
        spec = variable[...].sharding.spec
        parts = stacked_parts(name)
        if parts is not None:
            assert spec[0] is None, name
            specs.update({part: P(*reversed(spec[1:])) for part in parts})
            continue
        if variable.get_metadata().get("feature_major"):
            spec = P(*reversed(spec))
        specs[name] = spec
    return specs


def test_a_dimension_splits_only_when_its_units_divide() -> None:
    mesh = ParallelConfig(4, 2).build_mesh()
    assert logical_spec(("embed", "mlp"), mesh, {"mlp": 128}) == P(None, "model")
    assert logical_spec(("embed", "kv_heads"), mesh, {"kv_heads": 2}) == P(None, None)
    # a 3-head model on 4 devices: 3 * 64 columns would divide, but a head may not be cut in two
    assert logical_spec(("embed", "q_heads"), mesh, {"q_heads": 3}) == P(None, None)
    assert batch_sharding(mesh, np.zeros((8, 3))).spec == P("data", None)
    assert batch_sharding(mesh, np.zeros((1, 3))).spec == P(None, None)  # one row: replicated
    assert batch_sharding(mesh, np.zeros(())).spec == P()


def test_a_mesh_larger_than_the_devices_is_refused() -> None:
    with pytest.raises(ValueError, match="needs 16 devices; 8 CPU"):
        ParallelConfig(8, 2).build_mesh()
    with pytest.raises(ValueError, match="at least 1"):
        ParallelConfig(0, 1)


@pytest.mark.parametrize("tp", [2, 4, 8])
def test_each_parameter_and_the_kv_pool_land_with_the_intended_partition_spec(
    llama3_dir: Path, tp: int
) -> None:
    runner = small_runner(llama3_dir, tp)
    specs = param_specs(runner)
    for name, expected in EXPECTED_SPECS[tp].items():
        assert specs[name] == expected, name
    pool = runner.cache.layers[0][0]
    assert pool.sharding.spec == KV_POOL_SPECS.get(tp, P(None, None, None, None))
    # each device holds only its shard: a split weight's local piece is 1/tp of it
    q_proj = runner.model.state["layers"][0]["attn"]["q_proj"]
    kernel = q_proj[...]
    heads_axis = 0 if q_proj.get_metadata().get("feature_major") else 1
    expected = list(kernel.shape)
    expected[heads_axis] //= tp if tp <= 4 else 1
    assert kernel.addressable_shards[0].data.shape == tuple(expected)


def test_data_parallel_replicates_weights_across_data_groups(llama3_dir: Path) -> None:
    runner = small_runner(llama3_dir, 2, 2)
    specs = param_specs(runner)
    assert specs["layers.0.mlp.gate_proj"] == P(None, "model")
    assert all("data" not in spec for spec in specs.values())
    assert runner.mesh.shape == {"data": 2, "model": 2}


def weight_shapes(runner: ModelRunner) -> set[tuple[int, ...]]:
    """Full shapes of the parameters that are split across devices."""
    return {
        tuple(variable.shape)
        for _, variable in nnx.to_flat_state(runner.model.state)
        if any(axis is not None for axis in variable[...].sharding.spec)
    }


@pytest.mark.parametrize(("tp", "dp"), [(2, 1), (8, 1), (2, 2)])
def test_compiled_steps_never_all_gather_a_whole_weight(llama3_dir: Path, tp: int, dp: int) -> None:
    """Column-then-row parallel layers need all-reduces of activations, never a weight gathered whole."""
    runner = small_runner(llama3_dir, tp, dp)
    split = weight_shapes(runner)
    assert split, "some weight should be split"
    for shape in [(4, 1, 4), (1, 8, 4)]:  # a decode batch and a prefill chunk
        text = runner._executable(shape).as_text()
        gathered = {
            tuple(int(d) for d in dims.split(",") if d)
            for dims in re.findall(r"= \w+\[([\d,]*)\]\{[^}]*\} all-gather", text)
        }
        assert not gathered & split, f"step {shape} gathers weights of shapes {gathered & split}"
        assert "all-reduce" in text  # the per-layer reductions over the model axis are there
        # outputs: the cache comes back laid out as it went in (donation reuses its buffers); the
        # sampled results are replicated on purpose, for any process to read
        _, _, cache_out, _ = runner._executable(shape).output_shardings
        pool = runner.cache.layers[0][0].sharding
        assert all(s.is_equivalent_to(pool, 4) for s in jax.tree.leaves(cache_out))


def test_one_device_mesh_places_everything_on_the_first_device(llama3_dir: Path) -> None:
    runner = small_runner(llama3_dir, 1)
    assert runner.mesh.devices.size == 1
    assert runner.cache.layers[0][0].devices() == {jax.devices()[0]}
