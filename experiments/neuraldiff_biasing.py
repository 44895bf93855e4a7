r"""Entry point: contextual biasing as the zero-byte update, against the neural diffs and
combined with them (`amnet.studies.neuraldiff_biasing`).

    python -m experiments.neuraldiff_biasing --config=experiments/configs/neuraldiff.py:small \
        --config.base_run=runs/dense_small --workdir=runs/neuraldiff --data_dir=data \
        --chains=full,sparse_10pct --bonus=0.5 [--generations=1,5]
"""

from __future__ import annotations

from collections.abc import Sequence

from absl import app, flags

from amnet.studies import neuraldiff_biasing
from amnet.studies.neuraldiff_chains import config_from_flags, define_flags


def _define_flags() -> None:
    """Flags of the entry point (defined when run, so that importing `run` defines none)."""
    define_flags("The neuraldiff_generations config of the workdir.",
                 "A neuraldiff_generations workdir.")
    flags.DEFINE_list("chains", ["full", "sparse_10pct"], "Chains whose models to bias.")
    flags.DEFINE_float("bonus", 0.5, "Biasing bonus per matched character (nats; 0.5 was "
                       "chosen on g1's validation split, docs/neuraldiff.md).")
    flags.DEFINE_list("generations", [], "Generations to evaluate (default: all).")


def main(argv: Sequence[str]) -> None:
    config = config_from_flags(argv)
    args = flags.FLAGS
    generations = [int(g) for g in args.generations] or list(range(1, config.generations + 1))
    bad = [g for g in generations if not 1 <= g <= config.generations]
    if bad:
        raise app.UsageError(f"--generations {bad} outside 1..{config.generations}")
    print(neuraldiff_biasing.run(config, args.workdir, args.chains, args.bonus, generations))


if __name__ == "__main__":
    _define_flags()
    app.run(main)
