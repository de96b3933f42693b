"""How the model, its KV cache and each step's inputs lie on a device mesh.

The mesh has two axes: `data` (independent batch rows) and `model` (tensor parallelism: attention heads,
the MLP hidden width and the vocabulary are split across it). Model code names its dimensions with
logical axes (`("embed", "mlp")`); `LOGICAL_AXIS_RULES` is the one table that maps those names onto mesh
axes. A dimension is split only when its count of indivisible units (heads, not head-width columns)
divides by the mesh axis; otherwise it is replicated. That is how a model with fewer KV heads than
devices runs: its KV projections and cache are copied on every device of the `model` axis while the
query heads are still split.

The same code runs on one device (a 1 x 1 mesh), on 8 fake CPU devices, on a TPU slice, or across hosts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxserve.modeling.config import ModelConfig

DATA_AXIS = "data"
MODEL_AXIS = "model"
MESH_AXES = (DATA_AXIS, MODEL_AXIS)

LOGICAL_AXIS_RULES: Mapping[str, str | None] = MappingProxyType(
    {
        # weights (Megatron-style: column-parallel in, row-parallel out, so each layer needs one all-reduce
        # per sub-block and never gathers a weight)
        "vocab": MODEL_AXIS,
        "embed": None,
        "q_heads": MODEL_AXIS,
        "kv_heads": MODEL_AXIS,
        "mlp": MODEL_AXIS,
        "head_dim": None,
        # the KV cache pool [pages, page_size, kv_heads, head_dim]: pages are shared by every data shard
        # (the allocator is global), heads follow the KV projections
        "cache_pages": None,
        "cache_offset": None,
        # step inputs and outputs
        "batch": DATA_AXIS,
    }
)


@dataclass(frozen=True)
class ParallelConfig:
    """The mesh shape asked for: --tensor-parallel-size x --data-parallel-size devices."""

    tensor_parallel_size: int = 1
    data_parallel_size: int = 1

    def __post_init__(self) -> None:
        for name in ("tensor_parallel_size", "data_parallel_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")

    @property
    def num_devices(self) -> int:
        return self.tensor_parallel_size * self.data_parallel_size

    def build_mesh(self, devices: Sequence[jax.Device] | None = None) -> Mesh:
        """A (data, model) mesh over the first num_devices devices (all processes' devices when multi-host).

        Devices adjacent in `jax.devices()` order go to the same `model` group: on TPU that order follows
        the interconnect, and the model axis carries the per-layer all-reduces.
        """
        available = list(jax.devices() if devices is None else devices)
        if self.num_devices > len(available):
            raise ValueError(
                f"--tensor-parallel-size {self.tensor_parallel_size} x --data-parallel-size "
                f"{self.data_parallel_size} needs {self.num_devices} devices; "
                f"{len(available)} {available[0].platform.upper()} device(s) are visible"
            )
        grid = np.array(available[: self.num_devices]).reshape(
            self.data_parallel_size, self.tensor_parallel_size
        )
        return Mesh(grid, MESH_AXES)


def axis_units(cfg: ModelConfig) -> Mapping[str, int]:
    """For each logical axis, how many indivisible units it holds: a split may not cut one in two."""
    return MappingProxyType(
        {
            "vocab": cfg.vocab_size,
            "embed": cfg.hidden_size,
            "q_heads": cfg.num_heads,
            "kv_heads": cfg.num_kv_heads,
            "mlp": cfg.intermediate_size,
            "head_dim": cfg.head_dim,
        }
    )


def logical_spec(
    axes: Sequence[str | None], mesh: Mesh, units: Mapping[str, int] | None = None
) -> PartitionSpec:
    """The PartitionSpec for dimensions named `axes`: each goes where the rules say, when its units divide
    by that mesh axis's size (and no earlier dimension already took the axis); else it is replicated."""
    spec: list[str | None] = []
    for axis in axes:
        target = LOGICAL_AXIS_RULES.get(axis) if axis is not None else None
        if target is not None:
            size = mesh.shape[target]
            count = (units or {}).get(axis) if axis is not None else None
            if size == 1 or target in spec or (count is not None and count % size != 0):
                target = None
        spec.append(target)
    return PartitionSpec(*spec)


def param_shardings(abstract_state: nnx.State, cfg: ModelConfig, mesh: Mesh) -> Any:
    """A NamedSharding for every parameter of an (abstract) model state, from its logical axes."""
    units = axis_units(cfg)

    def sharding(variable: nnx.Variable) -> NamedSharding:
        axes = variable.get_metadata().get("logical_axes")
        if axes is None:
            raise ValueError(f"parameter of shape {variable.shape} declares no logical axes")
        return NamedSharding(mesh, logical_spec(axes, mesh, units))

    return jax.tree.map(sharding, abstract_state, is_leaf=lambda x: isinstance(x, nnx.Variable))


def kv_cache_spec(cfg: ModelConfig, mesh: Mesh) -> PartitionSpec:
    """A layer's key or value pool [pages, page_size, K, H]: KV heads over `model` when they divide."""
    return logical_spec(("cache_pages", "cache_offset", "kv_heads", "head_dim"), mesh, axis_units(cfg))


def kv_cache_shards(cfg: ModelConfig, mesh: Mesh) -> int:
    """Into how many pieces each page is split across devices (1 when the KV heads are replicated)."""
    return mesh.shape[MODEL_AXIS] if MODEL_AXIS in kv_cache_spec(cfg, mesh) else 1


def batch_sharding(mesh: Mesh, leaf: Any) -> NamedSharding:
    """A step input or output: its leading (batch) dimension over `data` when it divides, else replicated.
    Scalars are replicated."""
    shape = np.shape(leaf)
    if not shape:
        return NamedSharding(mesh, PartitionSpec())
    units = {"batch": shape[0]}
    return NamedSharding(mesh, logical_spec(("batch",) + (None,) * (len(shape) - 1), mesh, units))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def place(array: np.ndarray, sharding: NamedSharding) -> jax.Array:
    """A host array onto the mesh, each device receiving only its own slice (no whole copy on one device
    first), and across hosts each process supplying only the slices of its own devices."""
    return jax.make_array_from_callback(array.shape, sharding, lambda index: array[index])
