r"""The main job on the embedded corpus (`make demo`).

1. Builds the `small` spoken-commands corpus (g0 for training, g1 for the first update) and
   prints its statistics.
2. Trains the single-encoder dense RNN-T baseline (`experiments/configs/baseline.py:small`)
   and prints its test WER, greedy and beam.
3. Fine-tunes AmNet (dense + lowrank(16) branches, arbitrator, L_amr) from that baseline
   (`experiments/configs/amnet.py:small,lowrank`) and prints the AmNet vs baseline table of
   `experiments/amnet_paper.py` (WER, MFLOPs/frame, routing, simulated latency, streaming wall
   clock), with its plots in --amnet_workdir.
4. Ships the first model update as a neural diff: trains a sparse diff of the baseline on g1
   (10% of the model's bytes), then packs, signs, verifies and applies it with the device CLI
   (`python -m neuraldiff.cli`) to a copy of the model file, and prints WER before and after.
5. Ends on the device: writes the first g1 test utterance as a WAV file and transcribes it
   with the device runtime (`python -m amnet.transcribe`, NumPy only) from the model file
   before and after the update.

Re-running it reuses what exists: the corpus, and the run in --workdir (a finished run is
reported, an interrupted one resumed). `rm -rf runs/demo` to train again.
"""

from __future__ import annotations

import contextlib
import io
import re
import time
import wave
from collections.abc import Sequence
from pathlib import Path

from absl import app, flags, logging

from amnet import export, trainer
from amnet import transcribe as transcribe_cli
from amnet.data import datasets
from amnet.data.corpus import report as corpus_report
from amnet.data.corpus import spoken_commands
from amnet.evaluation import results as results_io
from amnet.evaluation import scoring
from amnet.studies import amnet_comparison
from amnet.studies.update_trainer import UpdateTrainer
from amnet.training import checkpointing, metric_writers, rundir
from experiments.configs import baseline
from experiments.configs import neuraldiff as neuraldiff_config
from neuraldiff import cli, model_file, updates

_DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS data dir (default: TFDS's own).")
_WORKDIR = flags.DEFINE_string("workdir", "runs/demo", "Run directory of the baseline.")
_SIZE = flags.DEFINE_enum("size", "small", sorted(spoken_commands.SIZES), "Corpus size.")
_STEPS = flags.DEFINE_integer("steps", None, "Training steps (default: the small preset's).")
_AMNET_WORKDIR = flags.DEFINE_string("amnet_workdir", "runs/demo_amnet",
                                     "Where the AmNet run, table and plots go.")
_AMNET_MODELS = flags.DEFINE_list("amnet_models", ["lowrank"],
                                  "AmNet models to compare with the baseline.")
_UPDATE_WORKDIR = flags.DEFINE_string("update_workdir", "runs/demo_update",
                                      "Where the g1 neural-diff update goes.")
_UPDATE_PERCENT = flags.DEFINE_float("update_percent", 10.0,
                                     "Budget of the update, % of the fp32 model's bytes.")


def ship_update(dense_run: Path, data_dir: str | None, size: str, out: Path,
                percent: float) -> str:
    """Trains a sparse diff of `dense_run` on g1 and ships it through the device CLI; returns
    the before/after table."""
    config = neuraldiff_config.get_config("small")
    config.base_run = str(dense_run)
    config.data.name = f"spoken_commands/{size}_g0"
    config.data.data_dir = data_dir
    out.mkdir(parents=True, exist_ok=True)
    update_trainer = UpdateTrainer(config)
    base = updates.flat(checkpointing.load_params(dense_run)[0])
    files = {name: str(out / name) for name in (
        "base.safetensors", "device.safetensors", "diff_g1.safetensors", "update_g1.ndiff",
        "server.pem", "device.pub")}
    # The model files a device holds: parameters and the recognizer's configuration.
    recognizer = export.device_metadata(rundir.read_run_config(dense_run))
    model_file.save(files["base.safetensors"], base, metadata=recognizer)
    model_file.save(files["device.safetensors"], base, metadata=recognizer)
    before = [update_trainer.word_error_rate(base, g) for g in (0, 1)]
    budget = int(percent / 100 * sum(v.nbytes for v in base.values()))
    print(f"training a sparse diff on g1 ({config.train.steps} steps, budget {budget:,} bytes)")
    collections, _ = update_trainer.sparse_diff(base, 1, budget)
    model_file.save_diff(files["diff_g1.safetensors"], "sparse", collections)
    for path in ("server.pem", "device.pub"):
        Path(files[path]).unlink(missing_ok=True)
    for argv in (["keygen", f"--private_key={files['server.pem']}",
                  f"--public_key={files['device.pub']}"],
                 ["pack", f"--base={files['base.safetensors']}",
                  f"--diff={files['diff_g1.safetensors']}", f"--budget_percent={percent}",
                  f"--signing_key={files['server.pem']}", f"--out={files['update_g1.ndiff']}"],
                 ["verify", f"--package={files['update_g1.ndiff']}",
                  f"--base={files['base.safetensors']}", f"--public_key={files['device.pub']}"],
                 ["apply", f"--package={files['update_g1.ndiff']}",
                  f"--model={files['device.safetensors']}", f"--public_key={files['device.pub']}",
                  "--require_signature"]):
        print(f"$ python -m neuraldiff.cli {' '.join(argv)}")
        if cli.main(argv) != 0:
            raise RuntimeError(f"neuraldiff.cli {argv[0]} failed")
    after = [update_trainer.word_error_rate(model_file.load(files["device.safetensors"]), g)
             for g in (0, 1)]
    size = Path(files["update_g1.ndiff"]).stat().st_size
    model_bytes = sum(v.nbytes for v in base.values())
    return "\n".join([
        "| model on the device | update bytes | WER g0 test | WER g1 test (new words) |",
        "|---|---|---|---|",
        f"| g0 baseline | - | {before[0]:.1%} | {before[1]:.1%} |",
        f"| + sparse diff for g1 | {size:,} ({100 * size / model_bytes:.1f}% of "
        f"{model_bytes:,}) | {after[0]:.1%} | {after[1]:.1%} |",
        "", on_the_device(update_trainer, out, files)])


def on_the_device(update_trainer: UpdateTrainer, out: Path, files: dict[str, str]) -> str:
    """The first g1 test utterance as a WAV file, transcribed by the device runtime from the
    model file before and after the update."""
    config = update_trainer.data_config(1)
    example = datasets.open_dataset(config, config.data.test_split)[0]
    path = out / "g1_test_0.wav"
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(16_000)
        f.writeframes(example["speech"].astype("<i2").tobytes())
    text = example["text"]
    text = text.decode() if isinstance(text, bytes) else text
    lines = [f"on the device: {path} (reference: {text})"]
    for name in ("base.safetensors", "device.safetensors"):
        argv = [f"--model={files[name]}", "--decoder=greedy", str(path)]
        lines.append(f"$ python -m amnet.transcribe {' '.join(argv)}")
        with contextlib.redirect_stdout(io.StringIO()) as printed:
            if transcribe_cli.main(argv) != 0:
                raise RuntimeError(f"amnet.transcribe failed on {path}")
        lines.append(printed.getvalue().rstrip())
    return "\n".join(lines)


def probe_table(workdir: Path) -> str:
    """The validation curve with the audio probes (docs/rnnt.md): how much the transducer's
    loss per token rises when the encoder output is replaced by its per-utterance mean (no
    timing) or by another utterance's (no content)."""
    rows = ["| step | validation greedy WER | CTC greedy WER | loss/token | encoder output "
            "replaced by its mean | by another utterance's |", "|---:|---:|---:|---:|---:|---:|"]
    for r in metric_writers.read_metrics(workdir):
        if "eval/probe_loss_per_token" in r:
            loss = r["eval/loss_per_token"]
            ctc_wer = f"{r['eval/wer_ctc_greedy']:.1%}" if "eval/wer_ctc_greedy" in r else "-"
            rows.append(f"| {r['step']} | {r['eval/wer_greedy']:.1%} | {ctc_wer} | {loss:.3f} | "
                        f"{r['eval/probe_loss_per_token'] - loss:+.2f} | "
                        f"{r['eval/swap_loss_per_token'] - loss:+.2f} |")
    return "\n".join(rows)


def _natural(item: tuple[str, object]) -> list:
    """Sort key of a (label, value) pair that orders "5-10 dB" before "10-20 dB"."""
    return [(0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", item[0])]


def conditions_table(workdir: Path, dataset: str, split: str) -> str:
    """Test WER (greedy and the best decoder) per eSpeak accent and per noise condition."""
    outputs = results_io.read_outputs(workdir / results_io.OUTPUTS)
    conditions = spoken_commands.conditions(dataset, split)
    if not conditions:
        return ""
    best = "beam_lm" if all(o.beam_lm is not None for o in outputs) else "beam"
    parts = []
    for key in ("accent", "noise", "snr"):
        groups = {i: c[key] for i, c in conditions.items()}
        greedy = scoring.grouped_wer(outputs, groups, field="greedy")
        fused = scoring.grouped_wer(outputs, groups, field=best)
        parts += [f"| {key} | utterances | words | greedy | {best.replace('_', ' + ')} |",
                  "|---|---:|---:|---:|---:|"]
        parts += [f"| {g} | {v['utterances']} | {v['words']} | {v['wer']:.1%} | "
                  f"{fused[g]['wer']:.1%} |" for g, v in sorted(greedy.items(), key=_natural)]
        parts.append("")
    return "\n".join(parts)


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.WARNING)
    start = time.perf_counter()
    print(corpus_report.build_and_describe(_SIZE.value, [0, 1], _DATA_DIR.value))
    print(f"\ncorpus ready in {time.perf_counter() - start:.0f} s\n")

    config = baseline.get_config("small")
    config.data.name = f"spoken_commands/{_SIZE.value}_g0"
    config.data.data_dir = _DATA_DIR.value
    if _STEPS.value:
        config.train.steps = _STEPS.value
    workdir = Path(_WORKDIR.value)
    results = trainer.train_or_reuse(config, workdir, "the dense RNN-T baseline")
    print(f"\ntest WER on {results['test_words_greedy']} words: "
          f"greedy {results['test_wer_greedy']:.2%}, beam {results['test_wer_beam']:.2%}, "
          f"beam + {config.lm.order}-gram character LM {results['test_wer_beam_lm']:.2%} "
          f"(CTC head, greedy: {results['test_wer_ctc_greedy']:.2%})")
    print(f"\n{probe_table(workdir)}\n")
    print(conditions_table(workdir, config.data.name, config.data.test_split))

    print("\nAmNet, fine-tuned from the baseline:")
    table = amnet_comparison.compare(amnet_comparison.Comparison(
        dense_run=str(workdir), workdir=_AMNET_WORKDIR.value, preset="small",
        models=tuple(_AMNET_MODELS.value), data_dir=_DATA_DIR.value, stream_utterances=10))
    print(f"\nAmNet vs the dense baseline ({_SIZE.value} corpus, test split):\n{table}")

    print("\nNeural diff: the first model update (g1), shipped to a device as a sparse diff:")
    print(ship_update(workdir, _DATA_DIR.value, _SIZE.value, Path(_UPDATE_WORKDIR.value),
                      _UPDATE_PERCENT.value))
    print(f"demo finished in {(time.perf_counter() - start) / 60:.1f} minutes")


if __name__ == "__main__":
    app.run(main)
