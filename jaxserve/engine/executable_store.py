"""Compiled step executables kept on disk, so a warm start loads them instead of tracing the model again.

JAX's persistent compilation cache skips XLA's compile but not the Python tracing and lowering that
computes its key: for SmolLM2's 39 step shapes that tracing alone kept a warm start at about a minute.
This store is keyed without lowering: a fingerprint of everything the compiled program depends on (the
jaxserve sources, JAX and jaxlib, the devices and mesh, the model's structure, weight shapes, dtypes and
shardings, the bucket configuration, the KV pool size and XLA_FLAGS), plus the step shape, which with
the sources fixes the compile options. An entry that fails to load is deleted and compiled again.

Only a freshly compiled executable is stored. One that JAX's persistent cache handed back was itself
deserialized, and XLA:CPU serializes such an executable without some of its kernels: loaded again, it
fails at its first run with "NOT_FOUND: Function ... not found". So nothing is saved while that cache
is enabled in the process (the server does not enable it).
"""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
import tempfile
from collections.abc import Iterable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import jax
from jax.experimental.serialize_executable import deserialize_and_load, serialize

log = logging.getLogger(__name__)

TRACING_FLAGS = ("jax_enable_x64", "jax_default_matmul_precision")
"""JAX settings that change what tracing the model produces."""

PACKAGE_DIR = Path(__file__).resolve().parent.parent  # the jaxserve package


def source_digest(package_dir: Path = PACKAGE_DIR) -> str:
    """A hash of every Python and C++ source of the package: any code change gives new executables."""
    digest = hashlib.sha256()
    for path in sorted([*package_dir.rglob("*.py"), *package_dir.rglob("*.cc")]):
        digest.update(str(path.relative_to(package_dir)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _abstract(tree: Any) -> str:
    """Structure, shapes, dtypes and shardings of a pytree of arrays (not their values)."""
    leaves = [
        (tuple(leaf.shape), str(leaf.dtype), str(getattr(leaf, "sharding", None)))
        for leaf in jax.tree.leaves(tree)
    ]
    return f"{jax.tree.structure(tree)}|{leaves}"


def fingerprint(parts: Iterable[object]) -> str:
    """The store key shared by every step shape of one runner: the environment plus the runner's `parts`."""
    digest = hashlib.sha256()
    environment = (
        source_digest(),
        jax.__version__,
        metadata.version("jaxlib"),
        jax.process_index(),
        jax.process_count(),
        [(d.id, d.platform, d.device_kind) for d in jax.devices()],
        os.environ.get("XLA_FLAGS", ""),
        [getattr(jax.config, flag) for flag in TRACING_FLAGS],
    )
    for part in (*environment, *parts):
        text = part if isinstance(part, str) else _abstract(part) if _is_array_tree(part) else repr(part)
        digest.update(text.encode())
        digest.update(b"\0")
    return digest.hexdigest()[:32]


def jax_cache_may_have_served_it() -> bool:
    """Whether a compile in this process may have come from JAX's persistent compilation cache."""
    settings = ("jax_compilation_cache_dir", "jax_enable_compilation_cache")
    return all(getattr(jax.config, setting) for setting in settings)


def _is_array_tree(value: object) -> bool:
    leaves = jax.tree.leaves(value)
    return bool(leaves) and all(isinstance(leaf, jax.Array) for leaf in leaves)


class ExecutableStore:
    """Serialized executables of one runner (one fingerprint) in `directory`, one file per step shape."""

    def __init__(self, directory: Path, key: str, devices: Sequence[jax.Device]) -> None:
        """`devices`: the devices the executables run on, in the order they were compiled for."""
        self.directory = directory
        self.key = key
        self.devices = list(devices)
        self._refused = False  # whether the refusal to store while JAX's cache is on was logged

    def _path(self, shape: tuple[int, ...]) -> Path:
        return self.directory / f"{self.key}-{'x'.join(map(str, shape))}.xla"

    def has(self, shape: tuple[int, ...]) -> bool:
        """Whether an entry for `shape` is on disk (it may still prove unusable when loaded)."""
        return self._path(shape).is_file()

    def load(self, shape: tuple[int, ...]) -> Any | None:
        """The stored executable for `shape`, loaded onto the devices, or None (absent or unusable)."""
        path = self._path(shape)
        try:
            payload, in_tree, out_tree = pickle.loads(path.read_bytes())
            return deserialize_and_load(payload, in_tree, out_tree, execution_devices=self.devices)
        except FileNotFoundError:
            return None
        except Exception as exc:  # a truncated or foreign file: compile again and replace it
            log.warning("discarding stored executable %s: %s", path.name, exc)
            path.unlink(missing_ok=True)
            return None

    def save(self, shape: tuple[int, ...], executable: Any) -> None:
        """Store `executable` for `shape`; a failure only costs the next start a compile."""
        if jax_cache_may_have_served_it():
            if not self._refused:
                self._refused = True
                log.warning(
                    "not storing compiled steps: JAX's persistent compilation cache is enabled "
                    "(jax_compilation_cache_dir), and an executable it returned cannot be stored again"
                )
            return
        try:
            blob = pickle.dumps(serialize(executable))
            self.directory.mkdir(parents=True, exist_ok=True)
            # Written whole under a temporary name, then renamed: a reader never sees half a file.
            with tempfile.NamedTemporaryFile(dir=self.directory, delete=False, suffix=".tmp") as handle:
                handle.write(blob)
            os.replace(handle.name, self._path(shape))
        except Exception as exc:
            log.warning("could not store the executable for step shape %s: %s", shape, exc)
