r"""Transcribe audio files with the device runtime.

    python -m amnet.transcribe --model=device.safetensors speech.wav more/ [--decoder=beam]
    python -m amnet.transcribe --run_dir=runs/demo --decoder=beam_lm --format=jsonl clips/
    python -m amnet.transcribe --model=device.safetensors --stream speech.wav
    python -m amnet.transcribe --onnx=onnx_int8/ speech.wav      # onnxruntime (extra `onnx`)
    python -m amnet.transcribe --model=device.safetensors --int8 speech.wav  # int8 weights

Inputs: WAV/FLAC/... files or directories (searched for audio files), any sample rate and
channel count (mixed down to mono and resampled to the model's rate). The model: a device model
file (`neuraldiff.cli export`, updated by `neuraldiff.cli apply`; no JAX needed), its ONNX
graphs (`--onnx`, `python -m amnet.device.onnx_model`) or a training run (`--run_dir`, its
newest checkpoint, exported in memory). Decoders: `greedy`, `beam`
(--beam), `beam_lm` (beam search with the character LM, `--lm` or the run's `lm.safetensors`);
`--context=phrases.txt` boosts phrases (new names) at word starts in beam search
(`amnet.rnnt.lm.build_context`).
Files longer than --segment_s (30 s) are cut at endpoints (0.8 s without a new label after
text, `Recognizer.segments`), so hour-long recordings decode in bounded memory; shorter ones are
decoded whole. Output on stdout: `<file>\t<text>` lines, or
JSON lines (id = the file) with the text, duration, segments, per-word times (--words)
and the encoder branch share (AmNet). `--stream`
feeds each file in 100 ms chunks and prints the partial transcript whenever it changes
(stderr). Files that fail are reported at the end (stderr) and make the exit status 1; the
others are still transcribed.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from amnet.data.text import read_phrases as phrase_lines
from amnet.device import audio as audio_lib
from amnet.device.recognizer import Endpointing, Recognizer, Segment
from amnet.device.spec import DeviceSpec, SpecError
from neuraldiff import model_file
from neuraldiff.model_file import ModelFileError

DECODERS = ("greedy", "beam", "beam_lm")


def _from_run(run_dir: Path, args) -> Recognizer:
    from amnet import export
    from amnet.evaluation import shallow_fusion
    from amnet.training import checkpointing, rundir
    from neuraldiff import updates

    config = rundir.read_run_config(run_dir)
    params, _ = checkpointing.load_params(run_dir)
    spec = export.device_spec(config)
    kwargs = _decoder_options(args, spec, run_dir / shallow_fusion.LM_FILE, config.lm.weight,
                              config.lm.length_bonus)
    return Recognizer(spec, updates.flat(params), int8=args.int8, **kwargs)


def _decoder_options(args, spec: DeviceSpec, default_lm: Path | None, lm_weight: float,
                     length_bonus: float) -> dict:
    from amnet.device import search
    from amnet.rnnt import lm as lm_lib

    if args.decoder == "greedy":
        if args.context:
            raise ValueError("--context needs beam search (--decoder=beam or beam_lm)")
        return {"beam": 1}
    automata, weights, bonus = [], [], 0.0
    if args.decoder == "beam_lm":
        path = Path(args.lm) if args.lm else default_lm
        if path is None or not path.is_file():
            raise ValueError(f"--decoder=beam_lm needs an LM file: --lm=... (looked for {path})")
        automata.append(lm_lib.load(path, vocab_size=len(spec.tokens)))
        weights.append(args.lm_weight if args.lm_weight is not None else lm_weight)
        bonus = args.length_bonus if args.length_bonus is not None else length_bonus
    if args.context:
        automata.append(lm_lib.build_context(read_phrases(args.context, spec),
                                             len(spec.tokens),
                                             boundary=lm_lib.space_token(spec.tokens)))
        weights.append(args.context_bonus)
    fusion = search.Fusion.of(automata, weights, bonus) if automata else None
    return {"beam": args.beam, "fusion": fusion}


def read_phrases(path: str | Path, spec: DeviceSpec) -> list[list[int]]:
    """Token ids of the phrases of a file, one per line (blank lines skipped)."""
    return [spec.encode(phrase) for phrase, _ in phrase_lines(path)]


def make_recognizer(args) -> Recognizer:
    if sum(x is not None for x in (args.model, args.run_dir, args.onnx)) != 1:
        raise ValueError("give exactly one of --model (a device model file), --run_dir or "
                         "--onnx")
    if args.int8 and args.onnx is not None:
        raise ValueError("--int8 holds a model file's or a run's weights as int8; for ONNX, "
                         "export int8 graphs with amnet.device.onnx_model --int8")
    if args.run_dir is not None:
        return _from_run(Path(args.run_dir), args)
    if args.onnx is not None:
        from amnet.device.onnx_model import OnnxNetwork  # the extra `onnx`

        network = OnnxNetwork(args.onnx)
        return Recognizer(network.spec, network=network,
                          **_decoder_options(args, network.spec, None, 0.15, 0.5))
    model = model_file.read(args.model)
    spec = DeviceSpec.from_metadata(model.metadata, str(args.model))
    return Recognizer(spec, model.params, int8=args.int8,
                      **_decoder_options(args, spec, None, 0.15, 0.5))


def _record(path: Path, segments: list[Segment], audio: audio_lib.Audio,
            with_words: bool) -> dict:
    rate = audio.sample_rate
    record = {"id": str(path), "text": " ".join(s.result.text for s in segments
                                                if s.result.text),
              "duration_s": round(audio.seconds, 3)}
    if audio.source_rate != audio.sample_rate or audio.channels != 1:
        record["converted"] = f"{audio.channels} ch {audio.source_rate} Hz -> mono " \
                              f"{audio.sample_rate} Hz"
    if len(segments) > 1:
        record["segments"] = [{"start_s": round(s.start / rate, 3),
                               "end_s": round(s.end / rate, 3), "text": s.result.text}
                              for s in segments]
    words = [s.result.words() for s in segments]
    if with_words and all(w is not None for w in words):
        record["words"] = [{**w, "start_s": round(w["start_s"] + s.start / rate, 3),
                            "end_s": round(w["end_s"] + s.start / rate, 3)}
                           for s, ws in zip(segments, words, strict=True) for w in ws]
    branches = np.concatenate([s.result.branches for s in segments] or [np.zeros(0, int)])
    if branches.size and branches.max() > 0:
        shares = np.bincount(branches) / branches.size
        record["branch_share"] = [round(float(s), 4) for s in shares]
    if any(s.result.truncated for s in segments):
        record["truncated"] = True
        print(f"warning: {path}: a segment reached the bound of labels per segment; its "
              "transcript is cut", file=sys.stderr)
    return record


def transcribe_file(recognizer: Recognizer, path: Path, args) -> dict:
    """A file's transcript: its audio cut at endpoints (`Recognizer.segments`), the segments'
    texts joined; with --stream, partial transcripts on stderr as the audio is fed."""
    audio = audio_lib.read(path, recognizer.sample_rate, max_seconds=args.max_seconds)
    chunk, rate = recognizer.sample_rate // 10, recognizer.sample_rate
    done, shown = [], [None]

    def show(stream, start):
        text = " ".join([s.result.text for s in done if s.result.text]
                        + ([stream.partial] if stream.partial else []))
        if text != shown[0]:
            shown[0] = text
            seconds = (start + stream.frames * recognizer.frontend.samples_per_frame) / rate
            print(f"{path} [{seconds:6.1f} s] {text}", file=sys.stderr, flush=True)

    chunks = (audio.samples[i:i + chunk] for i in range(0, audio.samples.shape[0], chunk))
    rules = (Endpointing(max_segment_s=args.segment_s) if audio.seconds > args.segment_s
             else Endpointing(math.inf, math.inf, math.inf))  # short: decoded whole
    for segment in recognizer.segments(chunks, rules, on_chunk=show if args.stream else None):
        done.append(segment)
    return _record(path, done, audio, args.words)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m amnet.transcribe",
                                description=__doc__.split("\n")[0])
    p.add_argument("inputs", nargs="+", help="audio files or directories")
    p.add_argument("--model", help="a device model file (.safetensors)")
    p.add_argument("--run_dir", help="a training run (its newest checkpoint; needs JAX)")
    p.add_argument("--onnx", help="a directory of ONNX graphs (amnet.device.onnx_model), run "
                   "by onnxruntime")
    p.add_argument("--int8", action="store_true",
                   help="hold the model's matrices as int8 with per-column scales (--model, "
                   "--run_dir)")
    p.add_argument("--decoder", choices=DECODERS, default="greedy")
    p.add_argument("--beam", type=int, default=8)
    p.add_argument("--lm", help="character LM file for beam_lm (default: the run's)")
    p.add_argument("--lm_weight", type=float, help="default: the run's, else 0.15")
    p.add_argument("--length_bonus", type=float, help="default: the run's, else 0.5")
    p.add_argument("--context", help="phrases to boost, one per line (contextual biasing; "
                                     "beam search)")
    p.add_argument("--context_bonus", type=float, default=2.0,
                   help="bonus per matched token of a phrase")
    p.add_argument("--format", choices=("text", "jsonl"), default="text")
    p.add_argument("--words", action="store_true", help="per-word times (jsonl)")
    p.add_argument("--stream", action="store_true",
                   help="feed 100 ms chunks and print partial transcripts on stderr")
    p.add_argument("--max_seconds", type=float, default=3600.0, help="longer files fail")
    p.add_argument("--segment_s", type=float, default=30.0,
                   help="longer files are cut at endpoints into segments of at most this")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        recognizer = make_recognizer(args)
    except (ValueError, OSError, ModelFileError, SpecError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    failures = []
    for path in audio_lib.find(args.inputs):
        try:
            record = transcribe_file(recognizer, path, args)
        except audio_lib.AudioError as e:
            failures.append(str(e))
            continue
        if args.format == "jsonl":
            print(json.dumps(record), flush=True)
        else:
            print(f"{record['id']}\t{record['text']}", flush=True)
    for failure in failures:
        print(f"failed: {failure}", file=sys.stderr)
    if failures:
        print(f"{len(failures)} file(s) failed", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
