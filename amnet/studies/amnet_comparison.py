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

from amnet import build, trainer
from amnet.amortized import streaming
from amnet.data import datasets
from amnet.evaluation import results as results_io
from amnet.evaluation import routing, scoring
from amnet.rnnt.flops import LinearSpec
from amnet.studies import amnet_matched, amnet_plots, sweep
from amnet.training import checkpointing, parallel, rundir
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
    # Matched compute (`experiments.amnet_matched`): a λ_cost sweep file of a cost-only model
    # (run into <workdir>/cost_sweep), tuned to the MFLOPs/frame of `matched_to` in <=
    # `matched_tries` more runs.
    cost_sweep: str | None = None
    matched_to: str = "lowrank"
    matched_tries: int = 3

    def model_config(self, name: str) -> ml_collections.ConfigDict:
        config = amnet_config.get_config(f"{self.preset},{name}")
        config.init.dense_run = str(Path(self.dense_run).absolute())
        # Fine-tuned on the corpus its dense parent was trained on.
        config.data.name = rundir.read_run_config(self.dense_run).data.name
        if self.data_dir:
            config.data.data_dir = self.data_dir
        if self.steps:
            config.train.steps = self.steps
        return config


def evaluate(name: str, config: ml_collections.ConfigDict, run_dir: Path, results: dict,
             reference: ml_collections.ConfigDict, setup: Comparison) -> tuple[dict, list]:
    """One table row and the per-utterance routing records of model `name`."""
    tokenizer = build.tokenizer(config)
    # The frontend the run trained with (its stored config holds the CMVN statistics).
    front, _ = build.frontend_configs(rundir.read_run_config(run_dir))
    model = build.model(config, tokenizer.vocab_size)
    params, _ = checkpointing.load_params(run_dir)
    mesh = parallel.make_mesh(1)
    split = datasets.open_eval_split(config, config.data.test_split, tokenizer)
    keep = max(setup.stream_utterances, setup.plot_utterances)
    utterances = routing.collect(model, params, split, tokenizer, front, mesh,
                                        keep_features=keep)
    branches = list(model.config.encoder_branches)
    row = {"model": name, "branches": " / ".join(branches),
           "wer_greedy": results["test_wer_greedy"], "wer_beam": results.get("test_wer_beam"),
           "wer_beam_lm": results.get("test_wer_beam_lm"),
           "test_words": results["test_words_greedy"]}
    if len(branches) > 1:  # routed: the weights it was trained with
        row["cost_weight"] = config.amnet.cost_weight
        row["amortization"] = config.amnet.amortization
    final_temperature = (config.amnet.temperature.final if "amnet" in config
                         else reference.amnet.temperature.final)
    row.update(routing.summarize(
        utterances, frame_period_s=reference.model.frame_period_s,
        processor_flops=reference.model.processor_flops, branches=len(branches),
        final_temperature=final_temperature))
    recognizer = streaming.StreamingRecognizer(model, params,
                                               max_length=config.eval.max_length)
    seconds = np.concatenate([recognizer.run(u.features).frame_seconds
                              for u in utterances[:setup.stream_utterances]])
    row["stream_ms_per_frame"] = 1e3 * float(seconds.mean())
    row["stream_p90_ms"] = 1e3 * float(np.percentile(seconds, 90))
    return row, utterances


def _percent(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}%"


def markdown(rows: list[dict], reference: ml_collections.ConfigDict) -> str:
    processor = reference.model.processor_flops / 1e6
    lines = [f"Processor {processor:.1f} MFLOP/s, frame period "
             f"{1e3 * reference.model.frame_period_s:.0f} ms; UPL from counted FLOPs; binary = "
             f"frames with max softmax(z/τ) > 0.99 at τ = {reference.amnet.temperature.final:g} "
             "(the final temperature) / τ = 1; fast on = share of fast-branch frames among "
             "silence / speech frames and among frames where greedy decoding emits / stays "
             "blank; stream = measured batch-1 wall clock per frame on this machine.", "",
             "| model | branches | WER greedy | WER beam | WER beam+LM | MFLOPs/frame | "
             "frames per branch | binary τ_final / τ=1 | fast on silence / speech | "
             "fast on emit / blank | UPL mean / p90 / max (ms) | stream ms/frame |",
             "|---|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        shares = " / ".join(f"{100 * r[k]:.0f}%" for k in sorted(r) if k.startswith("branch_"))
        if "branch_1_frames" not in r:  # a single encoder: no fast branch
            r = {**r, **dict.fromkeys(("fast_on_silence", "fast_on_speech", "fast_on_emit",
                                       "fast_on_blank"))}
        lines.append(
            f"| {r['model']} | {r['branches']} | {_percent(r['wer_greedy'])} | "
            f"{_percent(r['wer_beam'])} | {_percent(r['wer_beam_lm'])} | "
            f"{r['mflops_per_frame']:.2f} | {shares} | "
            f"{_percent(r['binary_final'])} / {_percent(r['binary_tau1'])} | "
            f"{_percent(r['fast_on_silence'])} / {_percent(r['fast_on_speech'])} | "
            f"{_percent(r['fast_on_emit'])} / {_percent(r['fast_on_blank'])} | "
            f"{r['upl_mean_ms']:.0f} / {r['upl_p90_ms']:.0f} / {r['upl_max_ms']:.0f} | "
            f"{r['stream_ms_per_frame']:.3f} |")
    return "\n".join(lines)


def matched(setup: Comparison, target: float, workdir: Path,
            ) -> tuple[str, ml_collections.ConfigDict, Path, dict]:
    """The cost-only run matched to `target` MFLOPs/frame: the sweep's closest run when within
    tolerance, else runs trained at the interpolated λ_cost (`amnet_matched.bracket`), with
    the sweep's config and only λ_cost changed, until one is or `matched_tries` are spent (the
    closest is then used; the table shows its MFLOPs/frame)."""
    sweep_dir = workdir / "cost_sweep"
    settings = {"init.dense_run": str(Path(setup.dense_run).absolute()),
                "data.name": rundir.read_run_config(setup.dense_run).data.name}
    if setup.steps:
        settings["train.steps"] = setup.steps
    sweep.sweep(setup.cost_sweep, str(sweep_dir), data_dir=setup.data_dir, settings=settings)
    points = amnet_matched.sweep_points(sweep_dir)
    base = rundir.read_run_config(points[0].run_dir, setup.data_dir)
    points += [amnet_matched.Point(r["cost_weight"], r["mflops_per_frame"], d)
               for d in sorted(workdir.glob("noamr-matched-*"))
               if (r := _matched_row(d)) is not None]
    for _ in range(setup.matched_tries):
        if abs(amnet_matched.closest(points, target).off(target)) <= amnet_matched.TOLERANCE:
            break
        weight = float(f"{amnet_matched.bracket(points, target).weight:.3g}")
        run_dir = workdir / f"noamr-matched-{weight:g}"
        config = base.copy_and_resolve_references()
        config.amnet.cost_weight = weight
        trainer.train_or_reuse(config, run_dir, f"{config.amnet_model} at λ_cost {weight:g}")
        metrics = results_io.read_metrics(run_dir / results_io.METRICS)
        points.append(amnet_matched.Point(weight, metrics["mflops_per_frame"], run_dir))
    best = amnet_matched.closest(points, target)
    config = rundir.read_run_config(best.run_dir, setup.data_dir)
    print(f"matched compute: λ_cost {best.weight:g} gives {best.mflops:.3f} MFLOPs/frame, "
          f"{100 * best.off(target):+.1f}% from {setup.matched_to}'s {target:.3f}")
    return (f"{config.amnet_model} λ={best.weight:g} (matched)", config, best.run_dir,
            json.loads((best.run_dir / "results.json").read_text()))


def _matched_row(run_dir: Path) -> dict | None:
    """λ_cost and MFLOPs/frame of a finished matched-compute run, None if unfinished."""
    if rundir.status(run_dir) != "finished":
        return None
    config = rundir.read_run_config(run_dir)
    return {"cost_weight": config.amnet.cost_weight,
            "mflops_per_frame": results_io.read_metrics(run_dir / results_io.METRICS)[
                "mflops_per_frame"]}


def compare(setup: Comparison) -> str:
    """Trains what is missing, evaluates every model, writes table and plots; returns the
    markdown table."""
    start = time.perf_counter()
    unknown = sorted(set(setup.models) - set(amnet_config.MODELS))
    if unknown:
        raise ValueError(f"unknown models {unknown}; choose from {amnet_config.MODELS}")
    dense_run = Path(setup.dense_run)
    if rundir.status(dense_run) != "finished":
        raise ValueError(f"dense run {dense_run} is not finished (train one with "
                         "experiments/configs/baseline.py, or run `make demo`)")
    workdir = Path(setup.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    reference = setup.model_config("lowrank")  # the processor speed, shared by every row

    dense_config = rundir.read_run_config(dense_run, setup.data_dir)
    rows, records, row_configs = [], {}, []
    row, records["dense"] = evaluate("dense", dense_config, dense_run, json.loads(
        (dense_run / "results.json").read_text()), reference, setup)
    rows.append(row)
    row_configs.append(dense_config)
    for name in setup.models:
        config = setup.model_config(name)
        results = trainer.train_or_reuse(config, workdir / name, name)
        row, records[name] = evaluate(name, config, workdir / name, results, reference, setup)
        rows.append(row)
        row_configs.append(config)
        print(markdown(rows[-1:], reference).splitlines()[-1])
    if setup.cost_sweep:
        target = next((r for r in rows if r["model"] == setup.matched_to), None)
        if target is None:
            raise ValueError(f"matched compute needs {setup.matched_to!r} among the models")
        name, config, run_dir, results = matched(setup, target["mflops_per_frame"], workdir)
        row, records[name] = evaluate(name, config, run_dir, results, reference, setup)
        row["matched_to"] = setup.matched_to
        rows.append(row)
        row_configs.append(config)
        print(markdown(rows[-1:], reference).splitlines()[-1])

    table = markdown(rows, reference)
    (workdir / "table.md").write_text(table + "\n")
    (workdir / "table.json").write_text(json.dumps(rows, indent=2))
    amnet_plots.wer_vs_flops(workdir / "wer_vs_flops.png", rows)
    latency = scoring.LatencyModel.of(reference.model)
    upl = {name: scoring.upl_seconds([u.frame_flops for u in utts], latency)
           for name, utts in records.items()}
    amnet_plots.upl(workdir / "upl.png", upl)
    routed = [n for n in setup.models if not n.startswith("single-")][:1]
    if setup.cost_sweep:
        routed.append(rows[-1]["model"])
    configs = {r["model"]: c for r, c in zip(rows, row_configs, strict=True)}
    for name, plot in zip(routed, ("routing.png", "routing_matched.png"), strict=False):
        config = configs[name]
        amnet_plots.routing(
            workdir / plot,
            [(f"{name}: test utterance {u.id}", u.features, u.branches, u.frame_flops)
             for u in records[name][:setup.plot_utterances]],
            num_mels=config.frontend.num_mels, frame_period_s=reference.model.frame_period_s,
            processor_flops=reference.model.processor_flops,
            branch_names=[str(LinearSpec.parse(b)) for b in config.model.encoder_branches])
    print(f"\nwrote {workdir}/table.md, table.json and the plots; "
          f"{(time.perf_counter() - start) / 60:.1f} minutes")
    return table
