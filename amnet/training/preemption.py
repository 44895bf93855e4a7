"""Preemption: SIGTERM and SIGINT become a request to stop after the step in flight."""

from __future__ import annotations

import signal
import threading


class Preemption:
    """While active, SIGTERM and SIGINT only set `signal_name`: the loop saves a checkpoint
    after the step in flight and returns (spot and preemptible VMs send SIGTERM first)."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self.signal_name: str | None = None
        self._previous = {}

    def __enter__(self) -> Preemption:
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        self.signal_name = signal.Signals(signum).name

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
