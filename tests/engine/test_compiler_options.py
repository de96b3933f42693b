"""The step's XLA options on CPU: YNNPACK's dots for a feature-major float model (the CPU default) and for
int8; for a row-major float model XLA's own dots from 16 rows, except decode steps of 32 rows or more."""

from __future__ import annotations

from pathlib import Path

import pytest

from jaxserve.engine.compiler_options import (
    NO_YNNPACK_DOTS,
    YNNPACK_DECODE_FROM_BATCH,
    step_compiler_options,
)
from jaxserve.engine.runner import ModelRunner
from jaxserve.modeling.loader import LoadedModel, load_model
from jaxserve.modeling.quantization import Quantization
from tests.engine.conftest import NUM_PAGES, TINY_BUCKETS

PAGES = TINY_BUCKETS.page_counts[0]
PREFILL_SHAPE = (1, 32, PAGES)  # 32 rows
DECODE_SHAPE = (4, 1, PAGES)  # 4 rows


@pytest.fixture(scope="module")
def row_major_model(tiny_model_dir: Path) -> LoadedModel:
    return load_model(tiny_model_dir, "float32", feature_major=False)


def test_a_feature_major_float_model_keeps_ynnpack_at_every_shape(tiny_runner: ModelRunner) -> None:
    assert tiny_runner.model.feature_major  # the CPU default
    for shape in (PREFILL_SHAPE, DECODE_SHAPE, (16, 1, PAGES), (1, 512, PAGES)):
        assert step_compiler_options(tiny_runner.model, shape) == {}
    assert "__ynn_fusion" in tiny_runner._executable(PREFILL_SHAPE).as_text()


def test_a_row_major_float_step_of_16_rows_or_more_compiles_its_dots_without_ynnpack(
    row_major_model: LoadedModel,
) -> None:
    assert step_compiler_options(row_major_model, PREFILL_SHAPE) == NO_YNNPACK_DOTS
    assert step_compiler_options(row_major_model, (16, 1, PAGES)) == NO_YNNPACK_DOTS
    text = ModelRunner(row_major_model, TINY_BUCKETS, NUM_PAGES)._executable(PREFILL_SHAPE).as_text()
    assert " dot(" in text  # XLA's own dots ...
    assert "__ynn_fusion" not in text  # ... and none handed to YNNPACK


def test_a_row_major_float_step_of_few_rows_keeps_ynnpack(row_major_model: LoadedModel) -> None:
    assert step_compiler_options(row_major_model, DECODE_SHAPE) == {}
    runner = ModelRunner(row_major_model, TINY_BUCKETS, NUM_PAGES)
    assert "__ynn_fusion" in runner._executable(DECODE_SHAPE).as_text()


def test_a_wide_row_major_float_decode_step_keeps_ynnpack(row_major_model: LoadedModel) -> None:
    batch = YNNPACK_DECODE_FROM_BATCH
    assert step_compiler_options(row_major_model, (batch - 1, 1, PAGES)) == NO_YNNPACK_DOTS
    assert step_compiler_options(row_major_model, (batch, 1, PAGES)) == {}
    assert step_compiler_options(row_major_model, (batch * 2, 1, PAGES)) == {}
    # A prompt chunk of as many rows is not a decode step: XLA's dots.
    assert step_compiler_options(row_major_model, (1, batch, PAGES)) == NO_YNNPACK_DOTS


def test_an_int8_model_keeps_ynnpack_for_its_int8_dots(tiny_model_dir: Path) -> None:
    model = load_model(tiny_model_dir, "float32", Quantization.for_platform())
    assert step_compiler_options(model, PREFILL_SHAPE) == {}
    runner = ModelRunner(model, TINY_BUCKETS, NUM_PAGES)
    assert "__ynn_fusion" in runner._executable(PREFILL_SHAPE).as_text()
