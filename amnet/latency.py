"""`amnet.latency.simulate`, the public name of the FIFO latency model
(`amnet.amortized.latency`)."""

from amnet.amortized.latency import LatencyResult, simulate, simulate_batch

__all__ = ["LatencyResult", "simulate", "simulate_batch"]
