"""Fixtures shared across test packages: the warmed tiny random-weight runner (engine and HTTP tests) and
the `--long` switch that scales the property-based fuzz runs up outside CI."""

from __future__ import annotations

import os

# Eight CPU devices for the whole suite, set before JAX starts its backend: the sharding tests build
# meshes over them; everything else runs on the first device as before (measured: no slower).
os.environ["XLA_FLAGS"] = " ".join(
    filter(None, [os.environ.get("XLA_FLAGS", ""), "--xla_force_host_platform_device_count=8"])
)

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis.configuration import set_hypothesis_home_dir

from jaxserve.engine.runner import ModelRunner
from jaxserve.modeling.default_model import default_model_path
from jaxserve.modeling.loader import load_model
from jaxserve.modeling.tokenizer import Tokenizer
from tests.engine.conftest import (
    NUM_PAGES,
    TINY_BUCKETS,
    EngineFactory,
    engine_factory,
)
from tests.modeling.tiny_checkpoints import write_sentencepiece_tokenizer, write_tiny_checkpoint

LONG_RUN_FACTOR = 20
"""How many times more examples each fuzz test generates under `--long` (minutes instead of seconds)."""


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--long",
        action="store_true",
        default=False,
        help=f"run the fuzz tests with {LONG_RUN_FACTOR}x the examples and a random seed (not for CI)",
    )


@pytest.fixture(scope="session", autouse=True)
def hypothesis_out_of_the_repository(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Hypothesis caches what it learns (constants of the code under test) in `.hypothesis/` of the
    working directory; the fuzz tests use no example database, and nothing is written into the checkout."""
    set_hypothesis_home_dir(str(tmp_path_factory.mktemp("hypothesis")))


@pytest.fixture(scope="session", autouse=True)
def compiled_steps_out_of_the_home_directory(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Servers the tests start store their compiled steps in a directory of this session, not in
    ~/.cache/jaxserve: a run never loads what an earlier run, or another checkout, left there."""
    os.environ["JAXSERVE_COMPILATION_CACHE"] = str(tmp_path_factory.mktemp("compilation-cache"))


@pytest.fixture(scope="session")
def long_run(request: pytest.FixtureRequest) -> bool:
    """Whether `--long` was given."""
    return bool(request.config.getoption("--long"))


@pytest.fixture(scope="session")
def fuzz_examples(long_run: bool) -> Callable[[int], int]:
    """Scale a fuzz test's CI example count: unchanged in CI, LONG_RUN_FACTOR times under `--long`."""
    return lambda ci_examples: ci_examples * (LONG_RUN_FACTOR if long_run else 1)


@pytest.fixture(scope="session")
def smollm2_tokenizer() -> Tokenizer:
    """The default model's tokenizer (byte-level BPE), shared by tests that only read it."""
    return Tokenizer.from_path(default_model_path())


@pytest.fixture(scope="session")
def sentencepiece_tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Tokenizer:
    """The tiny Llama 2-style sentencepiece tokenizer (byte fallback), shared by tests that only read it."""
    return Tokenizer.from_path(write_sentencepiece_tokenizer(tmp_path_factory.mktemp("sentencepiece")))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory: Path = tmp_path_factory.mktemp("tiny")
    write_tiny_checkpoint("smollm2", directory)
    write_sentencepiece_tokenizer(directory)
    return directory


@pytest.fixture(scope="session")
def tiny_runner(tiny_model_dir: Path) -> ModelRunner:
    """Compiled once for the session: engines over it differ only in host-side scheduling."""
    runner = ModelRunner(load_model(tiny_model_dir, "float32"), TINY_BUCKETS, NUM_PAGES)
    runner.warm_up()
    return runner


@pytest.fixture
def make_engine(tiny_runner: ModelRunner, tiny_model_dir: Path) -> Iterator[EngineFactory]:
    """Start engines over the shared runner (AsyncEngine keyword options); each is shut down after the test."""
    with engine_factory(tiny_runner, tiny_model_dir) as make:
        yield make
