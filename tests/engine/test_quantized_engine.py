"""An int8 model (the platform's method: W8A8 on CPU) serves through the engine like any other."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from jaxserve.engine.outputs import RequestOutput
from jaxserve.engine.runner import ModelRunner
from jaxserve.modeling.loader import load_model
from jaxserve.modeling.quantization import Quantization
from jaxserve.sampling.params import SamplingParams
from tests.engine.conftest import (
    NUM_PAGES,
    TINY_BUCKETS,
    collect,
    engine_factory,
    prompt_ids,
    run,
)
from tests.modeling.parity import last_position_logits

NEW_TOKENS = 8


@pytest.fixture(scope="module")
def int8_runner(tiny_model_dir: Path) -> ModelRunner:
    model = load_model(tiny_model_dir, "float32", Quantization.for_platform())
    return ModelRunner(model, TINY_BUCKETS, NUM_PAGES)


def direct_greedy(runner: ModelRunner, prompt: list[int], steps: int) -> list[int]:
    """Greedy tokens from whole-sequence forward passes of the model, without the engine or its KV cache."""
    tokens = list(prompt)
    for _ in range(steps):
        tokens.append(int(np.argmax(last_position_logits(runner.model, tokens, pad_to=32))))
    return tokens[len(prompt) :]


def test_int8_model_serves_the_greedy_tokens_of_a_direct_call(
    int8_runner: ModelRunner, tiny_model_dir: Path
) -> None:
    assert int8_runner.model.quantization == Quantization("w8a8")  # the CPU method
    prompts = [prompt_ids(9, 4), prompt_ids(17, 5)]
    greedy = SamplingParams(temperature=0.0, max_tokens=NEW_TOKENS, ignore_eos=True)
    with engine_factory(int8_runner, tiny_model_dir) as make:
        engine = make()

        async def together() -> list[RequestOutput]:  # batched, so a W8A8 matmul sees several real rows
            return await asyncio.gather(
                *(collect(engine, p, greedy, f"int8-{i}") for i, p in enumerate(prompts))
            )

        outputs = run(together())
    assert [list(o.token_ids) for o in outputs] == [
        direct_greedy(int8_runner, p, NEW_TOKENS) for p in prompts
    ]
