r"""Entry point: run a sweep here or print its launch commands (`amnet.studies.sweep`).

    python -m experiments.sweep --sweep=experiments/sweeps/tiny_2x2.toml \
        --workdir=runs/sweeps/tiny_2x2 [--mode=local|commands|tpu_vm|slurm] [--data_dir=...]
"""

from __future__ import annotations

from collections.abc import Sequence

from absl import app, flags

from amnet.studies import sweep


def _define_flags() -> None:
    flags.DEFINE_string("sweep", None, "Sweep file (TOML).", required=True)
    flags.DEFINE_string("workdir", None, "Sweep directory (one run directory per run).",
                        required=True)
    flags.DEFINE_enum("mode", "local", sweep.MODES, "Run here, or print the commands.")
    flags.DEFINE_string("data_dir", None, "TFDS data dir for every run.")
    flags.DEFINE_string("launcher_flags", "", "Flags for launch.tpu_vm / launch.slurm.")
    flags.DEFINE_multi_string("set", [], "key=value override for every run (repeatable; "
                              "TOML values: 40, 1e-3, [1, 2], or a bare string).")


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from absl import logging

    logging.set_verbosity(logging.WARNING)
    f = flags.FLAGS
    try:
        out = sweep.sweep(f.sweep, f.workdir, mode=f.mode, data_dir=f.data_dir,
                    launcher_flags=f.launcher_flags, settings=sweep.parse_settings(f.set))
    except sweep.SweepError as e:
        raise app.UsageError(str(e)) from None
    if f.mode != "local":
        print("\n".join(out))


if __name__ == "__main__":
    _define_flags()
    app.run(main)
