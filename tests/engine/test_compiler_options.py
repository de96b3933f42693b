"""The step's XLA options: YNNPACK dots off for a float model on CPU, left on for int8 (W8A8)."""

from __future__ import annotations

from pathlib import Path

from jaxserve.engine.compiler_options import NO_YNNPACK_DOTS, step_compiler_options
from jaxserve.engine.runner import ModelRunner
from jaxserve.modeling.loader import load_model
from jaxserve.modeling.quantization import Quantization
from tests.engine.conftest import NUM_PAGES, TINY_BUCKETS

DECODE_SHAPE = (1, 1, TINY_BUCKETS.page_counts[0])


def test_a_float_model_on_cpu_compiles_its_dots_without_ynnpack(tiny_runner: ModelRunner) -> None:
    assert step_compiler_options(tiny_runner.model) == NO_YNNPACK_DOTS
    text = tiny_runner._executable(DECODE_SHAPE).as_text()
    assert " dot(" in text  # XLA's own dots ...
    assert "__ynn_fusion" not in text  # ... and none handed to YNNPACK


def test_an_int8_model_keeps_ynnpack_for_its_int8_dots(tiny_model_dir: Path) -> None:
    model = load_model(tiny_model_dir, "float32", Quantization.for_platform())
    assert step_compiler_options(model) == {}
    runner = ModelRunner(model, TINY_BUCKETS, NUM_PAGES)
    assert "__ynn_fusion" in runner._executable(DECODE_SHAPE).as_text()
