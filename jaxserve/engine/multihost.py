"""Serving across several processes (hosts): process 0 leads, the others follow its device calls.

Every process holds the shards of the weights and KV cache on its own devices, and a jitted step over a
multi-process mesh runs only when every process calls it, in the same order, with the same inputs.
Process 0 runs HTTP and the scheduler; before each device call it broadcasts what the call is (a small
header) and its host-built inputs, and each follower makes the same call on what it received. Sampled
tokens come back replicated, so process 0 reads them from its own devices.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistributedConfig:
    """How this process joins the others: `jax.distributed.initialize` arguments from flags.

    With `auto` and no address, JAX finds the cluster itself (Cloud TPU pod slices, SLURM, ...).
    """

    coordinator_address: str | None = None
    num_processes: int | None = None
    process_id: int | None = None
    auto: bool = False

    @property
    def enabled(self) -> bool:
        return self.auto or self.coordinator_address is not None

    def __post_init__(self) -> None:
        explicit = (self.coordinator_address, self.num_processes, self.process_id)
        if any(v is not None for v in explicit) and any(v is None for v in explicit):
            raise ValueError(
                "--coordinator-address, --num-processes and --process-id go together (or use --distributed "
                "to let JAX find the cluster)"
            )
        if self.num_processes is not None and self.process_id is not None:
            if not 0 <= self.process_id < self.num_processes:
                raise ValueError(f"--process-id {self.process_id} is not in [0, {self.num_processes})")

    def initialize(self) -> None:
        """Join the cluster; must run before anything touches a JAX device."""
        if not self.enabled:
            return
        # XLA:CPU has no cross-process collectives of its own: gloo carries them over TCP (CPU tests, laptops).
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(
            coordinator_address=self.coordinator_address,
            num_processes=self.num_processes,
            process_id=self.process_id,
        )
        log.info(
            "process %d of %d; %d local / %d global devices",
            jax.process_index(),
            jax.process_count(),
            jax.local_device_count(),
            jax.device_count(),
        )


def is_leader() -> bool:
    return jax.process_index() == 0


def host_copy(array: jax.Array) -> np.ndarray:
    """A replicated device array on the host. Read from this process's own devices, which works across
    processes too (np.asarray of an array spanning other hosts' devices would refuse)."""
    return np.asarray(array.addressable_data(0))


def agree_on_minimum(value: int) -> int:
    """The smallest of every process's `value` (e.g. KV pages that fit its devices' free memory): shapes
    of sharded arrays must be the same in every process."""
    if jax.process_count() == 1:
        return value
    return int(np.min(multihost_utils.process_allgather(np.asarray(value, np.int64))))


class Call(enum.IntEnum):
    """What the leader asks the followers to run next."""

    STOP = 0
    INIT_SLOT = 1
    STEP = 2


HEADER_SIZE = 5


class LeaderChannel:
    """Process 0's side: announce each device call, with its inputs, before making it."""

    def announce(self, call: Call, *fields: int, payload: Any = None) -> None:
        header = np.zeros((HEADER_SIZE,), np.int32)
        header[0] = call
        header[1 : 1 + len(fields)] = fields
        multihost_utils.broadcast_one_to_all(header)
        if payload is not None:
            multihost_utils.broadcast_one_to_all(payload)


def follow(
    run_init_slot: Callable[[Any], None],
    init_slot_template: Callable[[], Any],
    run_step: Callable[[tuple[int, int, int], Any], object],
    step_template: Callable[[tuple[int, int, int], bool], Any],
) -> None:
    """A follower's loop: receive each call's header and inputs (shaped like the templates, which the
    leader's inputs match) and make the same call, until the leader says stop."""
    while True:
        header = multihost_utils.broadcast_one_to_all(np.zeros((HEADER_SIZE,), np.int32))
        call = Call(int(header[0]))
        if call is Call.STOP:
            log.info("leader stopped; follower exiting")
            return
        if call is Call.INIT_SLOT:
            run_init_slot(multihost_utils.broadcast_one_to_all(init_slot_template()))
        else:
            shape = (int(header[1]), int(header[2]), int(header[3]))
            want_prompt_logprobs = bool(header[4])
            payload = multihost_utils.broadcast_one_to_all(step_template(shape, want_prompt_logprobs))
            run_step(shape, payload)
