r"""Entry point: join result directories into one table and plots, every row scored by the
same scorer (`amnet.evaluation.compare`).

    python -m experiments.compare --results=runs/sweeps/tiny_2x2,runs/elsewhere/metrics.json \
        --out=runs/sweeps/tiny_2x2/compare [--processor_mflops=100 --frame_period_ms=30]
"""

from __future__ import annotations

from collections.abc import Sequence

from absl import app, flags

from amnet.evaluation import compare, scoring
from amnet.evaluation import results as results_io


def _define_flags() -> None:
    flags.DEFINE_list("results", None, "Run dirs, sweep dirs or metrics.json files.",
                      required=True)
    flags.DEFINE_string("out", None, "Where the table and plots go.", required=True)
    flags.DEFINE_float("processor_mflops", None, "P for every row's UPL (default: the first "
                       "run's latency model).")
    flags.DEFINE_float("frame_period_ms", None, "Δ for every row's UPL (default: the first "
                       "run's).")
    flags.DEFINE_bool("allow_mixed_datasets", False, "Tabulate runs tested on different data.")


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    f = flags.FLAGS
    latency = None
    try:
        if (f.processor_mflops is None) != (f.frame_period_ms is None):
            raise app.UsageError("give both --processor_mflops and --frame_period_ms, or neither")
        if f.processor_mflops is not None:
            latency = scoring.LatencyModel(f.frame_period_ms / 1e3, f.processor_mflops * 1e6)
        records = compare.compare(f.results, latency=latency,
                          allow_mixed_datasets=f.allow_mixed_datasets)
        latency = latency or scoring.LatencyModel(**records[0]["latency_model"])
        written = compare.write(records, latency, f.out)
    except (results_io.ResultsError, ValueError) as e:
        raise app.UsageError(str(e)) from None
    print(compare.markdown(records, latency))
    print("wrote " + ", ".join(str(p) for p in written))


if __name__ == "__main__":
    _define_flags()
    app.run(main)
