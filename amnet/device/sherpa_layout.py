r"""A device model file in sherpa-onnx's streaming transducer layout, run by sherpa-onnx itself.

sherpa-onnx's `OnlineRecognizer` reads three graphs and tokens.txt; for `model_type` "lstm"
(icefall's lstm_transducer_stateless2 layout) they are

    encoder.onnx  x [N, T, F] fbank frames, h [L, N, P], c [L, N, H]
                  -> encoder_out [N, T', J], new h, new c          (T' = T / stack * repeat)
    decoder.onnx  y [N, C] int64: the last C labels (-1 before the start, the blank as start)
                  -> decoder_out [N, J]
    joiner.onnx   encoder_out [N, J], decoder_out [N, J] -> logit [N, V]

with the sizes in the encoder's metadata (num_encoder_layers, T, decode_chunk_len,
rnn_hidden_size, d_model) and the decoder's (context_size, vocab_size). The runtime computes the
features itself and searches with the blank at id 0. Where this project's model differs, the
export bridges it as follows (`docs/device.md` has the measured cost of each):

1. Features. sherpa-onnx computes kaldi fbank (povey window, pre-emphasis 0.97, DC offset
   removed); the model was trained on a Hann-window log-mel. The
   encoder graph standardizes each fbank bin with statistics of kaldi fbank over training audio
   (`fbank_statistics`) where the model had its own CMVN, then stacks `stack` frames: the same
   bins and frame times (25 ms every 10 ms, `f_min`..`f_max`, `snip_edges`), a different
   spectrum estimate. Approximate; its cost is measured.
2. Prediction network. sherpa-onnx's decoder sees a window of C labels and no state. A
   stateless predictor over C labels is exactly that (a -1 is a zero embedding, as the start
   window is here); an LSTM predictor is run over the window from its zero state, skipping the
   -1s: exact while a hypothesis has fewer than C labels, a truncated history after.
3. Labels per frame. sherpa-onnx's greedy search emits at most one label per encoder frame;
   this model's search up to `max_symbols`. With `repeat=r` the encoder graph outputs every
   frame r times: greedy search on the repeated frames is greedy search with at most r labels
   per frame (a blank on a copy repeats on the next one, nothing having changed).
4. The end of the audio. sherpa-onnx decodes only whole chunks of T fbank frames and needs one
   frame beyond them; `SherpaRecognizer` appends (T + 1) hops of silence (zeros) so that every
   frame of the audio is decoded, as sherpa-onnx's examples pad their input.

sherpa-onnx's greedy search also treats a token named `<unk>` as a blank; tokens.txt names a
SentencePiece vocabulary's `<unk>` U+2047 (sentencepiece's own rendering of it) so that it is
emitted as this model's search emits it.

    python -m amnet.device.sherpa_layout --model=device.safetensors --stats=fbank_stats.json \
        --out=sherpa [--chunk=1] [--context=64] [--repeat=1]
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from amnet.device.features import to_float
from amnet.device.network import Network
from amnet.device.onnx_model import (
    GRAPHS,
    TOKEN_NAMES,
    _Graph,
    _value,
    check_graphs,
    joiner,
    read_dense,
    write_tokens,
)
from amnet.device.spec import METADATA_KEY, DeviceSpec, SpecError
from neuraldiff import model_file

# sherpa-onnx's fbank settings: fixed in its feature extractor (not options of its recognizer),
# but for the dither; samples in [-1, 1] (its normalize_samples=True)
FBANK = {"window_type": "povey", "preemph_coeff": 0.97, "remove_dc_offset": True, "dither": 0.0}
MIN_STD = 1e-3  # a bin that never varies (a silent band); the floor of the model's own CMVN
FRONTEND_KEYS = ("sample_rate", "win_length", "hop_length", "num_mels", "f_min", "f_max",
                 "stack")
SHERPA_TOKEN_NAMES = {**TOKEN_NAMES, "<unk>": "\u2047"}  # its search skips a token named <unk>


def _check_frontend(frontend: dict, where: str = "frontend") -> None:
    missing = [k for k in FRONTEND_KEYS if k not in frontend]
    if missing:
        raise SpecError(f"{where}: no {', '.join(missing)} in the frontend")
    rate = int(frontend["sample_rate"])
    for key, ms in (("win_length", 25), ("hop_length", 10)):
        if int(frontend[key]) * 1000 != ms * rate:
            raise SpecError(f"{where}: {key}={frontend[key]} samples at {rate} Hz; "
                            f"sherpa-onnx's fbank uses {ms} ms")


def _check_statistics(stats: dict, mels: int, where: str) -> None:
    for key in ("mean", "std"):
        value = np.asarray(stats.get(key, []), np.float64)
        if value.shape != (mels,):
            raise SpecError(f"{where}: fbank statistics {key!r} of {value.size} bins for a "
                            f"{mels}-bin model")
        if not np.all(np.isfinite(value)) or (key == "std" and np.any(value <= 0)):
            raise SpecError(f"{where}: fbank statistics {key!r} not finite"
                            + (" and positive" if key == "std" else ""))


def fbank(audio: np.ndarray, frontend: dict) -> np.ndarray:
    """audio `[S]` float32 in [-1, 1] -> kaldi fbank `[F, num_mels]` as sherpa-onnx computes it
    for this frontend (its fixed settings: `FBANK`), F = 1 + (S - win) // hop (0 if S < win)."""
    import kaldi_native_fbank as knf

    _check_frontend(frontend)
    options = knf.FbankOptions()
    f = options.frame_opts
    f.samp_freq = float(frontend["sample_rate"])
    f.dither, f.snip_edges = FBANK["dither"], True
    f.window_type, f.preemph_coeff = FBANK["window_type"], FBANK["preemph_coeff"]
    f.remove_dc_offset = FBANK["remove_dc_offset"]
    options.mel_opts.num_bins = int(frontend["num_mels"])
    options.mel_opts.low_freq = float(frontend["f_min"])
    options.mel_opts.high_freq = float(frontend["f_max"])
    stream = knf.OnlineFbank(options)
    stream.accept_waveform(f.samp_freq, np.asarray(audio, np.float32).tolist())
    stream.input_finished()
    frames = [stream.get_frame(i) for i in range(stream.num_frames_ready)]
    return np.asarray(frames, np.float32).reshape(len(frames), int(frontend["num_mels"]))


def fbank_statistics(audios: Iterable[np.ndarray], frontend: dict) -> dict:
    """Per-bin mean and standard deviation of `fbank` over every frame of `audios`."""
    total, square, count = 0.0, 0.0, 0
    for audio in audios:
        x = fbank(audio, frontend).astype(np.float64)
        total, square, count = total + x.sum(0), square + (x * x).sum(0), count + x.shape[0]
    if count == 0:
        raise ValueError("no fbank frames: every utterance is shorter than one window")
    mean = total / count
    std = np.maximum(np.sqrt(np.maximum(square / count - mean * mean, 0.0)), MIN_STD)
    return {"mean": mean.astype(np.float32).tolist(), "std": std.astype(np.float32).tolist(),
            "frames": count}


def _encoder(net: Network, spec: DeviceSpec, stats: dict, chunk: int, repeat: int, metadata,
             where: str):
    layers = net.encoder.branches[0]
    sizes = [(layer.output_dim, layer.hidden) for layer in layers]
    if len(set(sizes)) != 1:
        raise SpecError(f"{where}: sherpa-onnx stacks the encoder states, so every layer needs "
                        f"the same (output, hidden) sizes, not {sizes}")
    mels, stack = int(spec.frontend["num_mels"]), int(spec.frontend["stack"])
    g = _Graph()
    x = g.op("Div", g.op("Sub", "x", g.const("fbank_mean", np.asarray(stats["mean"], np.float32))),
             g.const("fbank_std", np.asarray(stats["std"], np.float32)))
    x = g.op("Reshape", x, g.const("stacked", np.array([0, -1, stack * mels], np.int64)))
    index = [g.const(f"index{i}", np.array(i, np.int64)) for i in range(max(chunk, len(layers)))]
    carries = [(g.op("Gather", "h", index[i], axis=0), g.op("Gather", "c", index[i], axis=0))
               for i in range(len(layers))]
    axis0, axis1 = (g.const(f"axis{a}", np.array([a], np.int64)) for a in (0, 1))
    frames = []
    for t in range(chunk):
        out = g.op("Gather", x, index[t], axis=1)
        for i, layer in enumerate(layers):
            carries[i] = g.lstm(layer, f"encoder/{i}", out, *carries[i])
            out = carries[i][0]
        enc = g.op("Add", g.op("MatMul", out, g.const("encoder_to_joint/kernel",
                                                      net.enc_kernel.kernel)),
                   g.const("encoder_to_joint/bias", net.enc_bias))
        frames += [g.op("Unsqueeze", enc, axis1)] * repeat
    g.op("Concat", *frames, axis=1, name="encoder_out")
    for k, name in enumerate(("new_h", "new_c")):
        g.op("Concat", *[g.op("Unsqueeze", carry[k], axis0) for carry in carries], axis=0,
             name=name)
    L, P, H = len(layers), layers[0].output_dim, layers[0].hidden
    T, J = chunk * stack, net.enc_kernel.shape[1]
    sizes = {"model_type": "lstm", "num_encoder_layers": L, "T": T, "decode_chunk_len": T,
             "rnn_hidden_size": H, "d_model": P, "amnet_repeat": repeat}
    return g.model("encoder", [_value("x", np.float32, ["N", T, mels]),
                               _value("h", np.float32, [L, "N", P]),
                               _value("c", np.float32, [L, "N", H])],
                   [_value("encoder_out", np.float32, ["N", chunk * repeat, J]),
                    _value("new_h", np.float32, [L, "N", P]),
                    _value("new_c", np.float32, [L, "N", H])],
                   {**metadata, **{k: str(v) for k, v in sizes.items()}})


def _decoder(net: Network, context: int, metadata):
    p, g = net.predictor, _Graph()
    vocab, embed = p.embedding.shape
    valid = g.op("GreaterOrEqual", "y", g.const("zero", np.array(0, np.int64)))
    table = g.const("embedding", np.concatenate([p.embedding, np.zeros((1, embed), np.float32)]))
    x = g.op("Gather", table, g.op("Where", valid, "y", g.const("none", np.array(vocab,
                                                                                  np.int64))),
             axis=0)  # [N, C, E]; -1 -> the zero row
    if p.stateless:
        flat = g.op("Reshape", x, g.const("flat", np.array([0, context * embed], np.int64)))
        out = g.op("Relu", g.op("Add", g.op("MatMul", flat, g.const("stateless/kernel",
                                                                  p.kernel.kernel)),
                                g.const("stateless/bias", p.bias)))
    else:
        axis1 = g.const("axis1", np.array([1], np.int64))
        first = g.op("Gather", x, g.const("index0", np.array(0, np.int64)), axis=1)  # [N, E]
        carries = [tuple(g.op("MatMul", first, g.const(f"zeros{d}", np.zeros((embed, d),
                                                                             np.float32)))
                         for d in (layer.output_dim, layer.hidden)) for layer in p.layers]
        for t in range(context):
            position = g.const(f"index{t}", np.array(t, np.int64))
            out = g.op("Gather", x, position, axis=1)
            keep = g.op("Unsqueeze", g.op("Gather", valid, position, axis=1), axis1)  # [N, 1]
            for i, layer in enumerate(p.layers):
                h, c = g.lstm(layer, f"predictor/{i}", out, *carries[i])
                carries[i] = (g.op("Where", keep, h, carries[i][0]),
                              g.op("Where", keep, c, carries[i][1]))
                out = carries[i][0]
    g.op("MatMul", out, g.const("predictor_to_joint/kernel", net.pred_kernel.kernel),
         name="decoder_out")
    sizes = {"context_size": str(context), "vocab_size": str(vocab)}
    return g.model("decoder", [_value("y", np.int64, ["N", context])],
                   [_value("decoder_out", np.float32, ["N", net.enc_kernel.shape[1]])],
                   {**metadata, **sizes})


def export(model_path: str | Path, out_dir: str | Path, stats: dict, chunk: int = 1,
           context: int | None = None, repeat: int = 1) -> Path:
    """Writes sherpa-onnx's encoder.onnx, decoder.onnx, joiner.onnx and tokens.txt of a device
    model file into `out_dir`; returns it.

    Args:
      stats: `fbank_statistics` of training audio (the encoder's feature normalization).
      chunk: encoder frames per encoder call (T = chunk * stack fbank frames).
      context: the decoder's label window C (a stateless predictor's own context if None; an
        LSTM predictor needs it).
      repeat: copies of each encoder frame (at most `repeat` labels per frame).

    Raises:
      SpecError: naming the model file: it is no recognizer; its encoder is branched, or its
        layers differ in size; its frontend is not sherpa-onnx's frame layout; its blank is not
        0; the statistics do not fit it; the context does not fit its predictor; chunk or
        repeat < 1.
    """
    import onnx

    spec, net = read_dense(model_path, "sherpa-onnx export")
    where = str(model_path)
    _check_frontend(spec.frontend, where)
    if int(spec.model["blank"]) != 0:
        raise SpecError(f"{where}: blank id {spec.model['blank']}; sherpa-onnx's is 0")
    _check_statistics(stats, int(spec.frontend["num_mels"]), where)
    if net.predictor.stateless:
        if context not in (None, net.predictor.context):
            raise SpecError(f"{where}: the stateless predictor's context is "
                            f"{net.predictor.context}, not {context}")
        context = net.predictor.context
    elif context is None or context < 1:
        raise SpecError(f"{where}: an LSTM predictor needs the decoder's label window: "
                        f"context >= 1, not {context}")
    if chunk < 1 or repeat < 1:
        raise SpecError(f"{where}: chunk={chunk} and repeat={repeat} must be >= 1")
    metadata = {METADATA_KEY: spec.to_json()}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    onnx.save(_encoder(net, spec, stats, chunk, repeat, metadata, where), out / "encoder.onnx")
    onnx.save(_decoder(net, context, metadata), out / "decoder.onnx")
    onnx.save(joiner(net, ("encoder_out", "N"), ("decoder_out", "N"), "logit", metadata),
              out / "joiner.onnx")
    write_tokens(spec, out / "tokens.txt", SHERPA_TOKEN_NAMES)
    return out


class SherpaRecognizer:
    """sherpa-onnx's own `OnlineRecognizer` (greedy search) over an exported directory, with
    the frontend of the model the encoder graph carries (its metadata) and the settings `fbank`
    uses."""

    def __init__(self, directory: str | Path, threads: int = 1):
        d = Path(directory)
        check_graphs(d, "export with `python -m amnet.device.sherpa_layout`")
        import onnx
        import sherpa_onnx

        encoder = d / "encoder.onnx"
        metadata = {p.key: p.value for p in onnx.load(encoder, load_external_data=False)
                    .metadata_props}
        spec = DeviceSpec.from_metadata(metadata, str(encoder))
        frontend = spec.frontend
        _check_frontend(frontend, str(encoder))
        self.sample_rate = int(frontend["sample_rate"])
        # (T + 1) hops of silence: sherpa-onnx decodes a chunk of T frames once one more exists
        self.tail = (int(metadata["T"]) + 1) * int(frontend["hop_length"])
        self.recognizer = sherpa_onnx.OnlineRecognizer.from_transducer(
            tokens=str(d / "tokens.txt"), encoder=str(d / "encoder.onnx"),
            decoder=str(d / "decoder.onnx"), joiner=str(d / "joiner.onnx"),
            num_threads=threads, sample_rate=self.sample_rate,
            feature_dim=int(frontend["num_mels"]), low_freq=float(frontend["f_min"]),
            high_freq=float(frontend["f_max"]), dither=FBANK["dither"], snip_edges=True,
            decoding_method="greedy_search")

    def transcribe(self, audio: np.ndarray) -> tuple[str, list[str]]:
        """audio `[S]` (int16, or float in [-1, 1]) at the model's rate -> (text, the tokens'
        names in tokens.txt). The audio is followed by `tail` zero samples."""
        stream = self.recognizer.create_stream()
        stream.accept_waveform(self.sample_rate, padded(to_float(audio), self.tail))
        stream.input_finished()
        while self.recognizer.is_ready(stream):
            self.recognizer.decode_stream(stream)
        result = self.recognizer.get_result_all(stream)
        return " ".join(result.text.replace("\u2581", " ").split()), list(result.tokens)


def padded(audio: np.ndarray, tail: int) -> np.ndarray:
    """audio `[S]` -> `[S + tail]` float32, zeros appended."""
    audio = np.asarray(audio, np.float32)
    return np.concatenate([audio, np.zeros(tail, np.float32)])


def _read_statistics(path: str) -> dict:
    try:
        stats = json.loads(Path(path).read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not JSON fbank statistics ({e})") from e
    if not isinstance(stats, dict):
        raise ValueError(f"{path}: fbank statistics must be a JSON object with mean and std")
    return stats


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(description="Export a device model file to sherpa-onnx's "
                                "streaming transducer layout.")
    p.add_argument("--model", required=True, help="a device model file (.safetensors)")
    p.add_argument("--stats", required=True,
                   help="JSON of fbank_statistics over training audio (mean, std)")
    p.add_argument("--out", required=True)
    p.add_argument("--chunk", type=int, default=1, help="encoder frames per encoder call")
    p.add_argument("--context", type=int, help="decoder label window (LSTM predictor)")
    p.add_argument("--repeat", type=int, default=1, help="labels per encoder frame at most")
    args = p.parse_args(argv)
    try:
        stats = _read_statistics(args.stats)
        out = export(args.model, args.out, stats, args.chunk, args.context, args.repeat)
    except (OSError, ValueError, model_file.ModelFileError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(", ".join(f"{n}.onnx {(out / f'{n}.onnx').stat().st_size:,} B" for n in GRAPHS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
