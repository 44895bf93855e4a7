"""The AmNet paper's comparison on the embedded corpus: train, evaluate, table, plots.

`compare(Comparison(...))` is used by `experiments/amnet_paper.py` (its absl entry point, which
documents the columns) and by `make demo`.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import ml_collections
import numpy as np

from amnet import build, checkpointing, routing_report, streaming, train_step, trainer
from amnet.flops import LinearSpec
from experiments import amnet_plots
from experiments.configs import amnet as amnet_config

PAPER_MODELS = ("single-dense", "single-sparse", "single-lowrank", "sparse", "sparse-noamr",
                "lowrank", "lowrank-noamr")

@dataclasses.dataclass(frozen=True)
class Comparison:
    """What to compare (the flags of this script; `make demo` builds its own)."""

    dense_run: str
    workdir: str
    preset: str = "small"
    models: tuple[str, ...] = PAPER_MODELS
    data_dir: str | None = None
    steps: int | None = None
    stream_utterances: int = 20
    plot_utterances: int = 3

    def model_config(self, name: str) -> ml_collections.ConfigDict:
        config = amnet_config.get_config(f"{self.preset},{name}")
        config.init.dense_run = str(Path(self.dense_run).absolute())
        # Fine-tuned on the corpus its dense parent was trained on.
        config.data.name = trainer.read_run_config(self.dense_run).data.name
        if self.data_dir:
            config.data.data_dir = self.data_dir
        if self.steps:
            config.train.steps = self.steps
        return config


def train(name: str, config: ml_collections.ConfigDict, workdir: Path) -> dict:
    results = workdir / "results.json"
    if results.exists():
        print(f"{name}: reusing the finished run in {workdir}")
        return json.loads(results.read_text())
    resume = (workdir / "config.json").exists()
    print(f"{name}: {'resuming' if resume else 'fine-tuning'} {config.model.encoder_branches} "
          f"for {config.train.steps} steps in {workdir}")
    return trainer.train_and_evaluate(config, str(workdir), resume=resume)


def evaluate(name: str, config: ml_collections.ConfigDict, run_dir: Path, results: dict,
             reference: ml_collections.ConfigDict, setup: Comparison) -> tuple[dict, list]:
    """One table row and the per-utterance routing records of model `name`."""
    tokenizer = trainer.make_tokenizer(config)
    # The frontend the run trained with (its stored config holds the CMVN statistics).
    front, _ = build.frontend_configs(trainer.read_run_config(run_dir))
    model = trainer.Transducer(build.model_config(config, tokenizer.vocab_size))
    params, _ = checkpointing.load_params(run_dir)
    mesh = train_step.make_mesh(1)
    split = trainer.open_eval_split(config, config.data.test_split, tokenizer)
    keep = max(setup.stream_utterances, setup.plot_utterances)
    utterances = routing_report.collect(model, params, split, tokenizer, front, mesh,
                                        keep_features=keep)
    branches = list(model.config.encoder_branches)
    row = {"model": name, "branches": " / ".join(branches),
           "wer_greedy": results["test_wer_greedy"], "wer_beam": results["test_wer_beam"],
           "test_words": results["test_words_greedy"]}
    row.update(routing_report.summarize(
        utterances, frame_period_s=reference.model.frame_period_s,
        processor_flops=reference.model.processor_flops, branches=len(branches)))
    recognizer = streaming.StreamingRecognizer(model, params,
                                               max_length=config.eval.max_length)
    seconds = np.concatenate([recognizer.run(u.features).frame_seconds
                              for u in utterances[:setup.stream_utterances]])
    row["stream_ms_per_frame"] = 1e3 * float(seconds.mean())
    row["stream_p90_ms"] = 1e3 * float(np.percentile(seconds, 90))
    return row, utterances


def markdown(rows: list[dict], reference: ml_collections.ConfigDict) -> str:
    processor = reference.model.processor_flops / 1e6
    lines = [f"Processor {processor:.1f} MFLOP/s, frame period "
             f"{1e3 * reference.model.frame_period_s:.0f} ms; UPL from counted FLOPs; "
             "stream = measured batch-1 wall clock per frame on this machine.", "",
             "| model | branches | WER greedy | WER beam | MFLOPs/frame | frames per branch | "
             "decided >0.99 | UPL mean / p90 / max (ms) | stream ms/frame |",
             "|---|---|---:|---:|---:|---|---:|---:|---:|"]
    for r in rows:
        shares = " / ".join(f"{100 * r[k]:.0f}%" for k in sorted(r) if k.startswith("branch_"))
        lines.append(
            f"| {r['model']} | {r['branches']} | {100 * r['wer_greedy']:.1f}% | "
            f"{100 * r['wer_beam']:.1f}% | {r['mflops_per_frame']:.2f} | {shares} | "
            f"{100 * r['confident_frames']:.1f}% | {r['upl_mean_ms']:.0f} / "
            f"{r['upl_p90_ms']:.0f} / {r['upl_max_ms']:.0f} | {r['stream_ms_per_frame']:.3f} |")
    return "\n".join(lines)


def compare(setup: Comparison) -> str:
    """Trains what is missing, evaluates every model, writes table and plots; returns the
    markdown table."""
    start = time.perf_counter()
    unknown = sorted(set(setup.models) - set(amnet_config.MODELS))
    if unknown:
        raise ValueError(f"unknown models {unknown}; choose from {amnet_config.MODELS}")
    dense_run = Path(setup.dense_run)
    if not (dense_run / "results.json").exists():
        raise ValueError(f"dense run {dense_run} is not finished (train one with "
                         "experiments/configs/baseline.py, or run `make demo`)")
    workdir = Path(setup.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    reference = setup.model_config("lowrank")  # the processor speed, shared by every row

    dense_config = trainer.read_run_config(dense_run, setup.data_dir)
    rows, records = [], {}
    row, records["dense"] = evaluate("dense", dense_config, dense_run, json.loads(
        (dense_run / "results.json").read_text()), reference, setup)
    rows.append(row)
    for name in setup.models:
        config = setup.model_config(name)
        results = train(name, config, workdir / name)
        row, records[name] = evaluate(name, config, workdir / name, results, reference, setup)
        rows.append(row)
        print(markdown(rows[-1:], reference).splitlines()[-1])

    table = markdown(rows, reference)
    (workdir / "table.md").write_text(table + "\n")
    (workdir / "table.json").write_text(json.dumps(rows, indent=2))
    amnet_plots.wer_vs_flops(workdir / "wer_vs_flops.png", rows)
    upl = {name: routing_report.upl_per_utterance(
        utts, frame_period_s=reference.model.frame_period_s,
        processor_flops=reference.model.processor_flops) for name, utts in records.items()}
    amnet_plots.upl(workdir / "upl.png", upl)
    routed = [n for n in setup.models if not n.startswith("single-")]
    if routed:
        name = routed[0]
        config = setup.model_config(name)
        amnet_plots.routing(
            workdir / "routing.png",
            [(f"{name}: test utterance {u.id}", u.features, u.branches, u.frame_flops)
             for u in records[name][:setup.plot_utterances]],
            num_mels=config.frontend.num_mels, frame_period_s=reference.model.frame_period_s,
            processor_flops=reference.model.processor_flops,
            branch_names=[str(LinearSpec.parse(b)) for b in config.model.encoder_branches])
    print(f"\nwrote {workdir}/table.md, table.json and the plots; "
          f"{(time.perf_counter() - start) / 60:.1f} minutes")
    return table
