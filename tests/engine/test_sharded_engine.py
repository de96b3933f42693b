"""The engine on a device mesh gives what it gives on one device: same greedy tokens, same logprobs.

Meshes over the suite's 8 CPU devices; the tiny llama3 model (4 query heads, 2 KV heads) makes TP=4 and
TP=8 replicate what cannot split, so both the split and the replicated paths run.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from jax.sharding import PartitionSpec as P

from jaxserve.engine.buckets import BucketConfig
from jaxserve.engine.outputs import RequestOutput
from jaxserve.engine.runner import ModelRunner
from jaxserve.modeling.loader import load_model
from jaxserve.modeling.quantization import Quantization
from jaxserve.modeling.sharding import ParallelConfig
from jaxserve.sampling.params import SamplingParams
from tests.engine.conftest import collect, engine_factory, prompt_ids, run
from tests.modeling.parity import greedy_continuation, small_runner
from tests.modeling.tiny_checkpoints import write_sentencepiece_tokenizer, write_tiny_checkpoint

pytestmark = pytest.mark.slow  # each mesh compiles its own steps

LOGPROB_TOLERANCE = 1e-4
"""float32 all-reduces sum the per-device partial products in another order than one device's matmul;
measured differences are ~1e-6 on this model."""

PROMPT_LENGTHS = (5, 19, 36)  # one shorter than a prefill chunk, one spanning two, one three
MAX_TOKENS = 12


@pytest.fixture(scope="module")
def llama3_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory: Path = tmp_path_factory.mktemp("tiny_llama3_engine")
    write_tiny_checkpoint("llama3", directory)
    write_sentencepiece_tokenizer(directory)
    return directory


def mesh_runner(model_dir: Path, tp: int, dp: int) -> ModelRunner:
    model = load_model(model_dir, "float32", mesh=ParallelConfig(tp, dp).build_mesh())
    buckets = BucketConfig(
        max_num_seqs=4,
        max_model_len=64,
        page_size=16,
        prefill_chunk_sizes=(16,),  # few buckets: each mesh compiles its own steps
        max_num_batched_tokens=16,
        min_kv_len=64,
    )
    return ModelRunner(model, buckets, 16)


def generate_all(runner: ModelRunner, model_dir: Path) -> list[RequestOutput]:
    """The prompts sent together, so decode steps batch them (rows split over `data` when it divides)."""
    params = SamplingParams(temperature=0.0, max_tokens=MAX_TOKENS, ignore_eos=True, logprobs=5)

    async def go() -> list[RequestOutput]:
        with engine_factory(runner, model_dir) as make:
            engine = make()
            return await asyncio.gather(
                *(
                    collect(engine, prompt_ids(n, salt=i), params, f"r{i}")
                    for i, n in enumerate(PROMPT_LENGTHS)
                )
            )

    return run(go())


@pytest.fixture(scope="module")
def one_device(llama3_dir: Path) -> list[RequestOutput]:
    return generate_all(mesh_runner(llama3_dir, 1, 1), llama3_dir)


@pytest.mark.parametrize(("tp", "dp"), [(2, 1), (4, 1), (8, 1), (1, 2), (2, 2)])
def test_mesh_gives_the_same_greedy_tokens_and_logprobs_as_one_device(
    llama3_dir: Path, one_device: list[RequestOutput], tp: int, dp: int
) -> None:
    sharded = generate_all(mesh_runner(llama3_dir, tp, dp), llama3_dir)
    for expected, got in zip(one_device, sharded, strict=True):
        assert got.token_ids == expected.token_ids
        assert expected.logprobs is not None and got.logprobs is not None
        for want, have in zip(expected.logprobs, got.logprobs, strict=True):
            assert have.logprob == pytest.approx(want.logprob, abs=LOGPROB_TOLERANCE)
            assert [t for t, _ in have.top] == [t for t, _ in want.top]
            for (_, lp_want), (_, lp_have) in zip(want.top, have.top, strict=True):
                assert lp_have == pytest.approx(lp_want, abs=LOGPROB_TOLERANCE)


def test_pallas_kernel_on_a_tensor_parallel_mesh_matches_the_reference(llama3_dir: Path) -> None:
    """The kernel (interpreted on CPU) runs per device under shard_map when the runner traces on a mesh:
    with the KV heads split over `model` at TP=2 it continues a prompt exactly as the reference path."""
    mesh = ParallelConfig(2, 1).build_mesh()
    continuations = {}
    for impl in ("reference", "pallas_interpret"):
        model = load_model(llama3_dir, "float32", mesh=mesh, attention_impl=impl)  # type: ignore[arg-type]
        runner = small_runner(model, max_model_len=64, chunk=16)
        assert "model" in runner.cache.layers[0][0].sharding.spec  # the heads really are split
        continuations[impl] = greedy_continuation(runner, prompt_ids(19, salt=3), steps=6)
    assert continuations["pallas_interpret"] == continuations["reference"]


@pytest.mark.parametrize("method", ["w8a8", "weight_only"])
def test_int8_on_a_tensor_parallel_mesh_matches_int8_on_one_device(llama3_dir: Path, method: str) -> None:
    """Quantized kernels and their scales split like the float weights (scales along the output axis);
    int32 partial sums all-reduce exactly, so TP=2 continues a prompt as one device does."""
    quantization = Quantization(method)  # type: ignore[arg-type]
    continuations = []
    for tp in (1, 2):
        model = load_model(llama3_dir, "float32", quantization, mesh=ParallelConfig(tp, 1).build_mesh())
        if tp == 2:
            gate = model.state["layers"][0]["mlp"]["gate_proj"]
            assert gate["kernel"][...].sharding.spec == P(None, "model")
            assert gate["scale"][...].sharding.spec == P("model")
        continuations.append(greedy_continuation(small_runner(model, 64, 16), prompt_ids(19, salt=5), 8))
    assert continuations[1] == continuations[0]
