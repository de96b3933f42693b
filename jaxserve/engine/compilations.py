"""Counting XLA compilations in this process, so a warmed server can show it never compiles under load."""

from __future__ import annotations

import threading

import jax

BACKEND_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"
"""The jax.monitoring event XLA reports once per backend compilation (cache hits report none)."""


class CompilationCounter:
    """Backend compilations and their total seconds, from creation on.

    Create one per server process: jax.monitoring listeners cannot be removed, so each instance stays
    registered for the life of the process.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()  # compilations are reported from whichever thread compiles
        self.count = 0
        self.seconds = 0.0
        jax.monitoring.register_event_duration_secs_listener(self._on_event)

    def _on_event(self, event: str, duration_secs: float, **_: str | int) -> None:
        if event == BACKEND_COMPILE_EVENT:
            with self._lock:
                self.count += 1
                self.seconds += duration_secs
