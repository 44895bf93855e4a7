r"""Builds the embedded spoken-commands corpus (TFDS, array_record) and prints its statistics.

    python -m experiments.build_corpus --size=small --generations=0 --data_dir=data
    python -m experiments.build_corpus --size=full --generations=0,1,2,3,4,5
"""

from __future__ import annotations

from collections.abc import Sequence

from absl import app, flags, logging

from amnet.data.corpus import report as corpus_report
from amnet.data.corpus import spoken_commands

_SIZE = flags.DEFINE_enum("size", "small", sorted(spoken_commands.SIZES), "Corpus size.")
_GENERATIONS = flags.DEFINE_list("generations", ["0"], "Generations to build, e.g. 0,1,2.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS data dir (default: TFDS's own).")
_SEED = flags.DEFINE_integer("seed", spoken_commands.DEFAULT_SEED, "Corpus seed.")
_WORKERS = flags.DEFINE_integer("workers", 0, "Synthesis processes (0: one per core).")


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.WARNING)
    try:
        generations = [int(g) for g in _GENERATIONS.value]
    except ValueError as e:
        raise app.UsageError(f"--generations must be integers, got {_GENERATIONS.value}") from e
    print(corpus_report.build_and_describe(_SIZE.value, generations, _DATA_DIR.value,
                                           _SEED.value, _WORKERS.value))


if __name__ == "__main__":
    app.run(main)
