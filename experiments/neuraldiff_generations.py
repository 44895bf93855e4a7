r"""Successive neural-diff updates over corpus generations g1..g5, against baselines.

    python -m experiments.neuraldiff_generations --config=experiments/configs/neuraldiff.py:small \
        --config.base_run=runs/dense_small --workdir=runs/neuraldiff --data_dir=data \
        [--config.methods=sparse,full] [--config.sparse_budgets=0.01,0.05]

Writes <workdir>/results.{json,md} (WER per update, forgetting, new-word recall, gaps to the
full chain with bootstrap intervals, targets), wer_vs_generation.png and wer_vs_bytes.png;
re-running resumes (finished chain steps are kept). See amnet/studies/neuraldiff_chains.py.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from absl import app, flags, logging

from amnet.studies import neuraldiff_report
from amnet.studies.neuraldiff_chains import (
    Experiment,
    chains,
    config_from_flags,
    define_flags,
    methods,
)


def run(config, workdir: str) -> str:
    """Runs (or resumes) every chain; returns the markdown report."""
    experiment = Experiment(config, workdir)
    base = experiment.base_result()
    out = Path(workdir)
    results = []
    for chain in chains(config):
        logging.info("chain %s", chain.name)
        results += experiment.run_chain(chain)
    if "full" in methods(config):
        for step in results:
            if step["method"] != "full":
                step["distance_to_full"] = experiment.distance_to_full(step["chain"],
                                                                       step["generation"])
        if "zstd" in methods(config):
            results += experiment.zstd_results()
    (out / "results.json").write_text(json.dumps(results, indent=2))
    sections = [neuraldiff_report.table(results), neuraldiff_report.forgetting_table(results),
                neuraldiff_report.recall_table(results, base)]
    if "full" in methods(config):
        sections.append(neuraldiff_report.gap_table(out, results))
    report = "\n\n".join([*sections, "\n".join(
        f"- {line}" for line in neuraldiff_report.targets(results))])
    (out / "results.md").write_text(report + "\n")
    neuraldiff_report.plots(results, out)
    return report


def main(argv: Sequence[str]) -> None:
    print(run(config_from_flags(argv), flags.FLAGS.workdir))


if __name__ == "__main__":
    define_flags("Experiment config file[:preset].", "Where chains and tables go.")
    app.run(main)
