"""Matched compute: the cost-only AmNet's λ_cost tuned until its MFLOPs/frame matches a target.

The AmNet paper compares two routings of the *same average cost*: what L_amr changes is where the
cheap frames go, not how many. A cost-only model (`<kind>-noamr`) spends less the larger λ_cost;
`bracket` reads a sweep over λ_cost (`experiments/sweeps/amnet_cost_small.toml`) as points
(λ, MFLOPs/frame), finds the two neighbouring λ whose costs enclose the target and interpolates
between them linearly in log λ; `experiments.amnet_comparison` trains at that λ, adds the result
as a point and repeats until one run is within `tolerance` (±5%) of the target.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from pathlib import Path

from amnet.evaluation import results as results_io
from amnet.training import rundir

WEIGHT = "amnet.cost_weight"
TOLERANCE = 0.05  # |MFLOPs/frame / target − 1| of a matched run


@dataclasses.dataclass(frozen=True)
class Point:
    """One finished cost-only run: its λ_cost and measured test MFLOPs/frame."""

    weight: float
    mflops: float
    run_dir: Path

    def off(self, target: float) -> float:
        """Relative distance of this run's cost from `target`."""
        return self.mflops / target - 1.0


@dataclasses.dataclass(frozen=True)
class Bracket:
    low: Point  # the larger cost (smaller λ)
    high: Point  # the smaller cost (larger λ)
    weight: float  # the interpolated λ_cost for the target


def bracket(points: Sequence[Point], target: float) -> Bracket:
    """The neighbouring λs whose costs enclose `target` MFLOPs/frame, and the log-linear
    interpolation between them. Raises ValueError (naming the measured range) if no pair
    encloses it: the sweep's grid must be extended."""
    ordered = sorted(points, key=lambda p: p.weight)
    if len(ordered) < 2:
        raise ValueError(f"matching {target:.3f} MFLOPs/frame needs two or more finished "
                         f"cost-only runs, found {len(ordered)}")
    for low, high in zip(ordered, ordered[1:], strict=False):
        if min(low.mflops, high.mflops) <= target <= max(low.mflops, high.mflops):
            if low.mflops == high.mflops:
                return Bracket(low, high, low.weight)
            share = (low.mflops - target) / (low.mflops - high.mflops)
            weight = math.exp(math.log(low.weight)
                              + share * (math.log(high.weight) - math.log(low.weight)))
            return Bracket(low, high, weight)
    measured = ", ".join(f"λ {p.weight:g}: {p.mflops:.3f}" for p in ordered)
    raise ValueError(f"no two cost-only runs enclose {target:.3f} MFLOPs/frame ({measured}); "
                     "add smaller or larger λ_cost to the sweep")


def sweep_points(sweep_dir: str | Path) -> list[Point]:
    """The finished runs of a λ_cost sweep (`experiments.sweep`'s workdir) as points."""
    sweep_dir = Path(sweep_dir)
    listing = sweep_dir / "sweep.json"
    if not listing.exists():
        raise ValueError(f"{sweep_dir} is not a sweep workdir (no sweep.json); run "
                         "experiments.sweep with experiments/sweeps/amnet_cost_small.toml")
    points = []
    for run in json.loads(listing.read_text())["runs"]:
        if WEIGHT not in run["overrides"]:
            raise ValueError(f"{listing}: run {run['name']} does not set {WEIGHT}")
        run_dir = sweep_dir / run["name"]
        if rundir.status(run_dir) == "finished":
            metrics = results_io.read_metrics(run_dir / results_io.METRICS)
            points.append(Point(float(run["overrides"][WEIGHT]),
                                float(metrics["mflops_per_frame"]), run_dir))
    return points


def closest(points: Sequence[Point], target: float) -> Point:
    """The point whose cost is nearest to `target`."""
    return min(points, key=lambda p: abs(p.off(target)))
