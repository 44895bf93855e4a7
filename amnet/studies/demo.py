"""The steps of `make demo` (`experiments.demo`) that are more than a call: shipping the first
model update through the device CLI, transcribing with the device runtime, and the baseline's
probe and per-condition tables."""

from __future__ import annotations

import contextlib
import io
import re
import wave
from pathlib import Path

from amnet import export
from amnet import transcribe as transcribe_cli
from amnet.data import datasets
from amnet.data.corpus import spoken_commands
from amnet.evaluation import results as results_io
from amnet.evaluation import scoring
from amnet.studies.update_trainer import UpdateTrainer
from amnet.training import checkpointing, metric_writers, rundir
from experiments.configs import neuraldiff as neuraldiff_config
from neuraldiff import cli, model_file, updates


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
    budget = updates.budget_bytes(base, percent / 100)
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
    model_bytes = updates.model_bytes(base)
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
