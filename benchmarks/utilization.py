"""Utilization: the machine's matmul peak, and the matmul FLOPs a compiled XLA program runs.

XLA's own `cost_analysis()` counts the body of a `while` loop once, whatever its trip count
(every `lax.scan` of the LSTMs and of the fused loss is one), so it undercounts a training step
by the number of frames. `hlo_matmul_flops` reads the optimized HLO text instead: every `dot`
is 2 x (output elements) x (contracted size), and a loop body counts `known_trip_count` times.
"""

from __future__ import annotations

import math
import re
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

_HEADER = re.compile(r"^(?:ENTRY )?%([\w.\-]+) \((.*)\) -> .* \{$")
_INSTRUCTION = re.compile(r"^\s*(?:ROOT )?%([\w.\-]+) = (\(.*?\)|\S+) ([\w\-]+)\((.*?)\)(.*)$")
_PARAMETER = re.compile(r"([\w.\-]+): ([a-z]\w*\[[\d,]*\])")
_DIMS = re.compile(r"^[a-z]\w*\[([\d,]*)\]")
_CALLED = re.compile(r"(?:calls|to_apply)=%([\w.\-]+)")
_OP_NAME = re.compile(r'op_name="([^"]*)"')
_HIDDEN_PRODUCT = re.compile(r'custom_call_target="[^"]*(gemm|matmul|conv)', re.IGNORECASE)


@dataclass
class _Computation:
    shapes: dict[str, str] = field(default_factory=dict)
    instructions: list[tuple[str, str, str, str]] = field(default_factory=list)


def _dims(shape: str) -> list[int]:
    match = _DIMS.match(shape)
    if match is None:
        raise ValueError(f"not an array shape: {shape!r}")
    return [int(d) for d in match.group(1).split(",") if d]


def _parse(text: str) -> tuple[dict[str, _Computation], str]:
    computations: dict[str, _Computation] = {}
    entry = current = None
    for line in text.splitlines():
        header = _HEADER.match(line)
        if header:
            current = computations.setdefault(header.group(1), _Computation())
            if line.startswith("ENTRY"):
                entry = header.group(1)
            current.shapes.update(_PARAMETER.findall(header.group(2)))
        elif line == "}":
            current = None
        elif current is not None and (match := _INSTRUCTION.match(line)):
            name, shape, op, operands, attributes = match.groups()
            current.shapes[name] = shape
            current.instructions.append((shape, op, operands, attributes))
    if entry is None:
        raise ValueError("no ENTRY computation in the HLO text")
    return computations, entry


def hlo_matmul_flops(text: str) -> tuple[int, dict[str, int]]:
    """(total, per op name) matmul FLOPs of optimized HLO text (`compiled.as_text()`), loops
    counted by their known trip count; a conditional counts its most expensive branch (and
    only that branch's ops in the breakdown). Raises where a count would be a guess: a loop
    without a known trip count, or a library call that hides a matrix product (a GEMM or
    convolution custom call, as XLA emits on GPUs)."""
    computations, entry = _parse(text)

    def flops(name: str, times: int) -> tuple[int, dict[str, int]]:
        total, by_op = 0, {}

        def add(counted: tuple[int, dict[str, int]]) -> None:
            nonlocal total
            total += counted[0]
            for key, value in counted[1].items():
                by_op[key] = by_op.get(key, 0) + value

        computation = computations[name]
        for shape, op, operands, attributes in computation.instructions:
            if op == "dot":
                lhs = re.search(r"%([\w.\-]+)", operands).group(1)
                lhs_dims = _dims(computation.shapes[lhs])
                contracted = re.search(r"lhs_contracting_dims=\{([\d,]*)\}", attributes)
                size = math.prod(lhs_dims[int(i)] for i in contracted.group(1).split(",") if i)
                f = 2 * math.prod(_dims(shape)) * size
                label = _OP_NAME.search(attributes)
                add((f, {label.group(1) if label else op: f * times}))
            elif op == "while":
                body = re.search(r"body=%([\w.\-]+)", attributes).group(1)
                trips = re.search(r'"known_trip_count":\{"n":"(\d+)"\}', attributes)
                if trips is None:
                    raise ValueError(f"a while loop ({body}) without a known trip count")
                n = int(trips.group(1))
                inner, inner_by_op = flops(body, times * n)
                add((n * inner, inner_by_op))
            elif op == "conditional":
                branches = re.search(r"branch_computations=\{([^}]*)\}", attributes)
                names = (branches.group(1).split(",") if branches else re.findall(
                    r"(?:true|false)_computation=%([\w.\-]+)", attributes))
                add(max((flops(b.strip().lstrip("%"), times) for b in names),
                        key=lambda counted: counted[0]))
            elif op == "custom-call" and _HIDDEN_PRODUCT.search(attributes):
                raise ValueError(f"a library call hides a matrix product: {attributes[:120]}")
            elif op in ("fusion", "call", "custom-call", "async-start"):
                for called in _CALLED.findall(attributes):
                    add(flops(called, times))
        return total, by_op

    return flops(entry, 1)


def matmul_peak_jax(n: int, dtype: str = "float32", repeats: int = 5) -> dict:
    """FLOP/s of a jitted `[n, n] @ [n, n]` in `dtype` (median of `repeats` after a warm-up)."""
    import jax
    import jax.numpy as jnp

    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32).astype(dtype)
    b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32).astype(dtype)
    product = jax.jit(jnp.dot)
    return _peak(lambda: product(a, b).block_until_ready(), n, repeats)


def matmul_peak_torch(n: int, dtype: str = "float32", repeats: int = 5) -> dict:
    """FLOP/s of `torch.mm` of `[n, n]` matrices in `dtype`."""
    import torch

    generator = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=generator).to(getattr(torch, dtype))
    b = torch.randn(n, n, generator=generator).to(getattr(torch, dtype))
    return _peak(lambda: torch.mm(a, b), n, repeats)


def median_seconds(fn: Callable[[], object], repeats: int) -> float:
    """Median seconds of `fn()` over `repeats` calls (after one warm-up call)."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _peak(product: Callable[[], object], n: int, repeats: int) -> dict:
    seconds = median_seconds(product, repeats)
    return {"n": n, "seconds": seconds, "flops_per_s": 2 * n**3 / seconds}
