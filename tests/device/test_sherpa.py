"""sherpa-onnx's layout (`amnet.device.sherpa_layout`): sherpa-onnx's own recognizer, run on the
exported graphs, emits exactly the labels the NumPy network's greedy search emits on the same
kaldi fbank frames (standardized as the encoder graph does), with at most `repeat` labels per
frame; what cannot be exported is refused by name."""

import dataclasses
import json
from collections import Counter

import numpy as np
import pytest

from amnet.device import search, sherpa_layout
from amnet.device.network import Network
from amnet.device.spec import METADATA_KEY, SpecError
from neuraldiff import model_file
from tests.helpers import random_model

pytest.importorskip("onnx", reason="the export needs the extra `onnx`")
pytest.importorskip("kaldi_native_fbank", reason="the fbank needs the extra `sherpa`")


def _audio(seconds=2.0, rate=16_000):
    """Tones and noise bursts that change every 0.1 s: features that move the random model."""
    rng = np.random.default_rng(3)
    pieces = []
    for _ in range(int(seconds * 10)):
        t = np.arange(rate // 10) / rate
        tone = np.sin(2 * np.pi * rng.uniform(100, 6000) * t) * rng.uniform(0.01, 0.5)
        pieces.append(tone + rng.normal(size=t.shape) * rng.uniform(0.001, 0.2))
    return np.concatenate(pieces).astype(np.float32)


def _model(tmp_path, predictor, tokens=None):
    _, _, flat, spec, _ = random_model(("dense",), predictor, num_mels=8)
    if tokens:
        spec = dataclasses.replace(spec, tokens=tokens)
    path = tmp_path / "device.safetensors"
    model_file.save(path, flat, metadata={METADATA_KEY: spec.to_json()})
    return path, flat, spec


def _numpy_greedy(flat, spec, audio, stats, chunk, max_symbols):
    """Greedy search of the NumPy network on the fbank frames sherpa-onnx decodes: the audio and
    (T + 1) hops of zeros, whole chunks of T = chunk * stack frames while more than T frames
    remain (its `IsReady`)."""
    net = Network(spec, flat)
    stack = spec.frontend["stack"]
    size = chunk * stack
    audio = sherpa_layout.padded(audio, (size + 1) * spec.frontend["hop_length"])
    frames = sherpa_layout.fbank(audio, spec.frontend)
    frames = (frames - np.asarray(stats["mean"])) / np.asarray(stats["std"])
    used = (frames.shape[0] - 1) // size * size
    stacked = frames[:used].reshape(used // stack, -1).astype(np.float32)
    greedy, state = search.Greedy(net, max_symbols, 10_000), net.encoder.initial_state()
    for t, x in enumerate(stacked):
        enc_proj, state, _ = net.encode_step(x[None], state)
        greedy.step(enc_proj, t)
    return [spec.tokens[k] for k in greedy.best()], greedy.best_frames()


@pytest.mark.parametrize("predictor, chunk, repeat", [("stateless", 2, 1), ("stateless", 1, 3),
                                                      ("lstm", 3, 2)])
def test_sherpa_onnx_recognizes_what_the_numpy_network_does(tmp_path, predictor, chunk, repeat):
    pytest.importorskip("sherpa_onnx", reason="sherpa-onnx's recognizer: the extra `sherpa`")
    path, flat, spec = _model(tmp_path, predictor)
    audio = _audio()
    stats = sherpa_layout.fbank_statistics([audio[:16_000], audio[16_000:]], spec.frontend)
    context = None if predictor == "stateless" else 64
    out = sherpa_layout.export(path, tmp_path / "sherpa", stats, chunk=chunk, context=context,
                               repeat=repeat)
    _, tokens = sherpa_layout.SherpaRecognizer(out).transcribe(audio)
    expected, frames = _numpy_greedy(flat, spec, audio, stats, chunk, repeat)
    assert tokens == expected
    # Non-trivial: several labels, more than one kind; with repeat > 1, frames that emitted
    # `repeat` labels (the cap binds: sherpa-onnx's one-label-per-frame search cannot do this
    # alone).
    assert len(expected) >= 5 and len(set(expected)) >= 2
    assert max(Counter(frames).values()) == repeat
    if context is not None:  # the LSTM predictor's window holds every hypothesis: exact
        assert len(expected) + 1 <= context


def test_the_lstm_decoder_runs_its_predictor_over_the_window_skipping_missing_labels(tmp_path):
    """decoder.onnx on windows of C = 4 labels: the NumPy predictor run from its zero state over
    the window's labels (the -1s skipped), then projected; a longer history is truncated."""
    onnxruntime = pytest.importorskip("onnxruntime")
    path, flat, spec = _model(tmp_path, "lstm")
    stats = {"mean": [0.0] * 8, "std": [1.0] * 8}
    out = sherpa_layout.export(path, tmp_path / "sherpa", stats, context=4)
    windows = np.array([[-1, -1, -1, 0], [-1, 0, 3, 5], [0, 2, 2, 6], [4, 1, 6, 3]], np.int64)
    got = onnxruntime.InferenceSession(str(out / "decoder.onnx")).run(None, {"y": windows})[0]
    net = Network(spec, flat)
    for window, row in zip(windows, got, strict=True):
        carry = net.predictor.initial_carry(1)
        for label in window[window >= 0]:
            pred_proj, carry = net.predict_step(np.array([label]), carry)
        np.testing.assert_allclose(row, pred_proj[0], rtol=1e-5, atol=1e-5)
    assert not np.allclose(got[2], got[3])  # the windows differ, so do the outputs


def test_a_sentencepiece_unk_is_renamed_in_tokens_txt(tmp_path):
    """sherpa-onnx skips a token named <unk> as if it were the blank."""
    path, _, spec = _model(tmp_path, "stateless", tokens=("", "<unk>", "a", "b", "c", "d", " "))
    out = sherpa_layout.export(path, tmp_path / "sherpa", {"mean": [0.0] * 8, "std": [1.0] * 8})
    lines = (out / "tokens.txt").read_text().splitlines()
    assert lines == ["<blk> 0", "\u2047 1", "a 2", "b 3", "c 4", "d 5", "\u2581 6"]


def test_the_graphs_carry_sherpa_onnx_metadata_and_the_cli_writes_them(tmp_path):
    import onnx

    from amnet.device.onnx_model import TOKEN_NAMES

    path, _, spec = _model(tmp_path, "lstm")
    stats = sherpa_layout.fbank_statistics([_audio(0.5)], spec.frontend)
    (tmp_path / "stats.json").write_text(json.dumps(stats))
    assert sherpa_layout.main([f"--model={path}", f"--stats={tmp_path / 'stats.json'}",
                               f"--out={tmp_path / 'out'}", "--chunk=4", "--context=8"]) == 0
    meta = {p.key: p.value for p in onnx.load(tmp_path / "out" / "encoder.onnx").metadata_props}
    assert (meta["model_type"], meta["T"], meta["decode_chunk_len"]) == ("lstm", "12", "12")
    assert (meta["num_encoder_layers"], meta["d_model"], meta["rnn_hidden_size"]) == (
        "2", "16", "16")
    meta = {p.key: p.value for p in onnx.load(tmp_path / "out" / "decoder.onnx").metadata_props}
    assert (meta["context_size"], meta["vocab_size"]) == ("8", "7")
    lines = (tmp_path / "out" / "tokens.txt").read_text().splitlines()
    assert lines == [f"{TOKEN_NAMES.get(t, t)} {i}" for i, t in enumerate(spec.tokens)]


def test_what_sherpa_onnx_cannot_run_is_refused_by_name(tmp_path, capsys):
    path, _, spec = _model(tmp_path, "lstm")
    stats = sherpa_layout.fbank_statistics([_audio(0.5)], spec.frontend)
    with pytest.raises(SpecError, match="label window"):
        sherpa_layout.export(path, tmp_path / "a", stats)  # LSTM predictor, no context
    with pytest.raises(SpecError, match="device.safetensors: .*'mean' of 3 bins for a 8-bin"):
        sherpa_layout.export(path, tmp_path / "b", {"mean": [0] * 3, "std": [1] * 3},
                             context=4)
    with pytest.raises(SpecError, match="'std' not finite and positive"):
        sherpa_layout.export(path, tmp_path / "b", {"mean": [0] * 8, "std": [1] * 7 + [0]},
                             context=4)
    with pytest.raises(SpecError, match=r"chunk=0 and repeat=1 must be >= 1"):
        sherpa_layout.export(path, tmp_path / "b", stats, chunk=0, context=4)
    (tmp_path / "s").mkdir()
    stateless, _, _ = _model(tmp_path / "s", "stateless")
    with pytest.raises(SpecError, match="stateless predictor's context is 2, not 5"):
        sherpa_layout.export(stateless, tmp_path / "b", stats, context=5)
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "encoder.onnx").write_bytes(b"")
    with pytest.raises(SpecError, match="e: no decoder.onnx, joiner.onnx"):
        sherpa_layout.SherpaRecognizer(tmp_path / "e")
    with pytest.raises(SpecError, match="win_length=512 samples at 16000 Hz"):
        sherpa_layout.fbank(_audio(0.5), {**spec.frontend, "win_length": 512})
    _, _, flat, branched, _ = random_model(("dense", "lowrank(3)", "sparse(0.8)"), "lstm",
                                        num_mels=8)
    model_file.save(tmp_path / "branched.safetensors", flat,
                    metadata={METADATA_KEY: branched.to_json()})
    with pytest.raises(SpecError, match="branched.safetensors: .*dense single-branch"):
        sherpa_layout.export(tmp_path / "branched.safetensors", tmp_path / "c", stats, context=4)
    (tmp_path / "stats.json").write_text(json.dumps(stats))
    assert sherpa_layout.main([f"--model={tmp_path / 'missing.safetensors'}",
                               f"--stats={tmp_path / 'stats.json'}",
                               f"--out={tmp_path / 'd'}", "--context=4"]) == 1
    assert "missing.safetensors" in capsys.readouterr().err
    (tmp_path / "bad.json").write_text("{mean")
    assert sherpa_layout.main([f"--model={path}", f"--stats={tmp_path / 'bad.json'}",
                               f"--out={tmp_path / 'd'}", "--context=4"]) == 1
    assert "bad.json: not JSON fbank statistics" in capsys.readouterr().err
