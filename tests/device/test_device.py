"""The device runtime (`amnet.device`): no JAX, and the same features, encoder outputs, branch
decisions and transcripts as the JAX model. Tolerances: 1e-4 absolute on log-mels (float32 FFTs
of two libraries), 1e-5 on encoder outputs and logits; token sequences identical."""

import json
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest

from amnet.amortized import pruning
from amnet.data import datasets
from amnet.device import features, kernels, search
from amnet.device.network import Network
from amnet.device.recognizer import Recognizer
from amnet.device.spec import SpecError
from amnet.evaluation import shallow_fusion
from amnet.rnnt import decoding, frontend, lm
from amnet.rnnt.flops import LinearSpec
from amnet.rnnt.transducer import Transducer
from amnet.training import rundir
from neuraldiff import model_file
from tests.helpers import (
    ROOT,
    SEARCH,
    cpu_env,
    random_model,
    transcribe_cli,
    wav_bytes,
)

HANG_GUARD_S = 300


def test_the_device_runtime_imports_neither_jax_nor_flax():
    code = ("import sys, amnet.device.recognizer, amnet.device.search, amnet.transcribe, "
            "amnet.device.onnx_model, amnet.device.sherpa_layout, "
            "neuraldiff.cli; "
            "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('jax', 'flax')); "
            "print(loaded); assert not loaded")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=cpu_env(), text=True,
                         capture_output=True, timeout=HANG_GUARD_S)
    assert out.returncode == 0, out.stdout + out.stderr


def _frontend_config(**kw):
    rng = np.random.default_rng(3)
    return frontend.FrontendConfig(feature_mean=tuple(rng.normal(-5, 1, 80)),
                                   feature_std=tuple(rng.uniform(1, 3, 80)), **kw)


def test_features_equal_the_jax_frontend_whole_and_in_any_chunks():
    config = _frontend_config()
    audio = (np.random.default_rng(0).normal(0, 3000, 16_000 + 1234)).astype(np.int16)
    expected, lengths = frontend.featurize(audio[None], np.array([audio.size]), config)
    device = features.Frontend(json.loads(json.dumps(asdict(config))))
    whole = device.encoder_frames(features.to_float(audio))
    assert whole.shape == expected.shape[1:] and int(lengths[0]) == whole.shape[0]
    np.testing.assert_allclose(whole, expected[0], atol=1e-4)
    for seed in range(3):  # streamed in random chunks, 1 sample to a second at a time
        stream, frames, at = features.FeatureStream(device), [], 0
        rng = np.random.default_rng(seed)
        while at < audio.size:
            size = int(rng.integers(1, 16_000))
            frames.append(stream.accept(audio[at:at + size]))
            at += size
        np.testing.assert_array_equal(np.concatenate(frames), whole)


def test_sparse_and_lowrank_kernels_equal_their_dense_products():
    rng = np.random.default_rng(0)
    dense = rng.normal(size=(12, 20)).astype(np.float32)
    dense[rng.random(dense.shape) < 0.8] = 0.0
    x = rng.normal(size=(3, 12)).astype(np.float32)
    sparse = kernels.linear({"w": dense}, "w", LinearSpec.parse("sparse(0.8)"))
    assert sparse.nnz == np.count_nonzero(dense)
    np.testing.assert_allclose(sparse(x), x @ dense, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(sparse(x[0]), x[0] @ dense, rtol=1e-5, atol=1e-6)
    u, v = rng.normal(size=(12, 3)).astype(np.float32), rng.normal(size=(3, 20)).astype(
        np.float32)
    lowrank = kernels.linear({"w_u": u, "w_v": v}, "w", LinearSpec.parse("lowrank(3)"))
    np.testing.assert_allclose(lowrank(x), x @ u @ v, rtol=1e-5, atol=1e-5)


def test_block_sparse_kernels_equal_their_dense_products_balanced_or_not():
    rng = np.random.default_rng(0)
    spec = LinearSpec.parse("sparse(0.75,4x8)")  # [16, 24]: 4 blocks x 3 groups, 1 kept
    x = rng.normal(size=(3, 16)).astype(np.float32)
    # Pruned as training prunes (JAX): balanced, so stored without padding.
    trained = np.asarray(pruning.block_prune(rng.normal(size=(16, 24)).astype(np.float32),
                                             0.75, spec))
    blocks = kernels.linear({"w": trained}, "w", spec)
    assert isinstance(blocks, kernels.BlockSparse) and blocks.nnz == np.count_nonzero(trained)
    np.testing.assert_allclose(blocks(x), x @ trained, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(blocks(x[0]), x[0] @ trained, rtol=1e-5, atol=1e-6)
    assert kernels.nbytes(blocks) == trained.nbytes // 4 + 3 * 4  # values + a block index each
    # Any kernel is exact (unbalanced groups are padded with zero blocks), and two maps of
    # [x, h] stack into one.
    loose = rng.normal(size=(12, 24)).astype(np.float32)
    loose[rng.random(loose.shape) < 0.7] = 0.0
    loose[:, :8] = 0.0  # an empty group
    other = kernels.linear({"w": loose}, "w", spec)
    h = rng.normal(size=(3, 12)).astype(np.float32)
    np.testing.assert_allclose(other(h), h @ loose, rtol=1e-5, atol=1e-6)
    both = kernels.stacked(blocks, other)
    np.testing.assert_allclose(both(np.concatenate([x, h], 1)), x @ trained + h @ loose,
                               rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="does not split into blocks of 4 inputs x 8 outputs"):
        kernels.linear({"w": np.ones((10, 24), np.float32)}, "w", spec)


def test_int8_kernels_are_within_half_a_step_of_the_weights_in_a_quarter_of_the_bytes():
    rng = np.random.default_rng(0)
    dense = rng.normal(size=(40, 24)).astype(np.float32) * np.linspace(0.01, 3, 24)
    dense[:, 5] = 0.0  # a zero column keeps a usable scale
    q = kernels.int8(kernels.Dense(dense))
    assert isinstance(q, kernels.Int8) and q.q.dtype == np.int8 and q.shape == (40, 24)
    step = np.abs(dense).max(axis=0) / 127  # per output column
    error = np.abs(q.dequantized() - dense)
    assert np.all(error <= step / 2 + 1e-6) and np.all(q.dequantized()[:, 5] == 0)
    assert np.abs(q.q).max() == 127  # each column's largest weight uses the full range
    x = rng.normal(size=(3, 40)).astype(np.float32)
    np.testing.assert_allclose(q(x), x @ q.dequantized(), rtol=1e-5, atol=1e-5)
    assert kernels.nbytes(q) == 40 * 24 + 4 * 24 == kernels.nbytes(kernels.Dense(dense)) // 4 + 96
    lowrank = kernels.LowRank(dense[:, :3], dense[:3])
    assert kernels.int8(lowrank) is lowrank  # thin factors stay float32


def test_the_stateless_prediction_network_steps_as_in_jax():
    model, params, flat, spec, _ = random_model(("dense",), "stateless")
    network = Network(spec, flat)
    tokens = np.array([[0, 3, 1, 4, 1, 5]], np.int32)  # the start symbol, then labels
    expected = model.apply({"params": params}, tokens[:, 1:], np.array([5]),
                           method=Transducer.predict)
    carry, steps = network.predictor.initial_carry(1), []
    for t in tokens[0]:
        pred_proj, carry = network.predict_step(np.array([t]), carry)
        steps.append(pred_proj[0])
    np.testing.assert_allclose(np.stack(steps), expected[0], atol=1e-5)


def test_a_random_model_decodes_identically_in_jax_and_on_the_device():
    """Every kernel (an AmNet with dense, lowrank(3), sparse(0.8) and block-sparse branches)
    and the LSTM prediction network; the stateless one is checked step by step above."""
    branches = ("dense", "lowrank(3)", "sparse(0.75,4x16)", "sparse(0.8)")
    model, params, flat, spec, x = random_model(branches)
    lengths = np.array([x.shape[1]])
    network = Network(spec, flat)
    # Encoder outputs and branch decisions, frame by frame against the whole-sequence pass.
    enc_proj, _ = model.apply({"params": params}, x, lengths, method=Transducer.encode)
    trace = model.apply({"params": params}, x, lengths, method=Transducer.route)
    state, outputs, chosen = network.encoder.initial_state(), [], []
    for frame in x[0]:
        out, state, branch = network.encode_step(frame[None], state)
        outputs.append(out[0])
        chosen.append(branch)
    np.testing.assert_allclose(np.stack(outputs), enc_proj[0], atol=1e-5)
    if len(branches) > 1:
        expected = np.argmax(np.asarray(trace.gates[0]), axis=-1)
        np.testing.assert_array_equal(chosen, expected)
        assert len(set(chosen)) == len(branches)  # every branch ran somewhere
    # Greedy, beam, and beam with a fused LM: the same tokens.
    sentences = [np.random.default_rng(i).integers(1, 7, 8) for i in range(30)]
    fusion = (lm.build_ngram(sentences, 7, 3),)
    cases = [("greedy", dict(beam=1), lambda: decoding.greedy_decode(
                 model, params, x, lengths, **SEARCH)),
             ("beam", dict(beam=3), lambda: decoding.beam_decode(
                 model, params, x, lengths, beam=3, **SEARCH)),
             ("beam+lm", dict(beam=3, fusion=search.Fusion.of(fusion, [0.4], 0.3)),
              lambda: decoding.beam_decode(model, params, x, lengths, beam=3, **SEARCH,
                                           fusion=decoding.Fusion.of(list(fusion), [0.4], 0.3)))]
    for name, kwargs, jax_decode in cases:
        tokens, token_lengths = jax_decode()
        expected = np.asarray(tokens[0, :int(token_lengths[0])]).tolist()
        recognizer = Recognizer(spec, flat, max_length=spec.max_length,
                                max_symbols_per_frame=SEARCH["max_symbols_per_frame"], **kwargs)
        stream = recognizer.stream()
        for frame in x[0]:
            stream.accept_frame(frame)
        result = stream.finish()
        assert result.tokens == expected, name
        assert len(expected) > (5 if name == "greedy" else 0), name  # the model emits labels
        # Token times (word times), greedy and beam: one frame per label, in order, at most
        # max_symbols_per_frame labels on a frame.
        frames = result.token_frames
        assert len(frames) == len(expected) and frames == sorted(frames), name
        assert 0 <= frames[0] and frames[-1] < x.shape[1], name
        assert max(np.bincount(frames)) <= SEARCH["max_symbols_per_frame"], name


def test_an_exported_run_transcribes_its_test_split_as_the_training_run_did(
        tiny_dense_run, tmp_path):

    device = tmp_path / "device.safetensors"
    from neuraldiff import cli

    assert cli.main(["export", f"--run={tiny_dense_run}", f"--out={device}"]) == 0
    config = rundir.read_run_config(tiny_dense_run)
    source = datasets.open_dataset(config, config.data.test_split)
    audio = {source[i]["id"].decode() if isinstance(source[i]["id"], bytes) else
             source[i]["id"]: source[i]["speech"] for i in range(len(source))}
    expected = {}
    for line in (tiny_dense_run / "outputs.jsonl").read_text().splitlines():
        row = json.loads(line)
        expected[row["id"]] = row
    assert set(expected) == set(audio)
    c = config.lm
    bound = {"max_length": config.eval.max_length}  # the JAX decoders' label bound
    decoders = {"greedy": Recognizer.load(device, **bound),
                "beam": Recognizer.load(device, beam=config.eval.beam, **bound),
                "beam_lm": Recognizer.load(device, beam=c.beam, **bound,
                                           lm=tiny_dense_run / shallow_fusion.LM_FILE,
                                           lm_weights=[c.weight], length_bonus=c.length_bonus)}
    for name, recognizer in decoders.items():
        for uid, speech in audio.items():
            assert recognizer.transcribe(speech).text == expected[uid][name], (name, uid)


@pytest.mark.parametrize("predictor, projection", [("lstm", None), ("stateless", None),
                                                   ("lstm", 8)])
def test_int8_weights_keep_the_random_models_decisions_close(predictor, projection):
    """A quarter of the bytes; logits within 2% of their range, and the same greedy tokens
    (the trained model's int8 WER: docs/device.md)."""
    from amnet import transcribe

    _, _, flat, spec, x = random_model(("dense",), predictor=predictor, projection=projection)
    fp32, int8 = Network(spec, flat), Network(spec, flat, int8=True)
    assert int8.weight_bytes() < 0.3 * fp32.weight_bytes()
    state32, state8 = fp32.encoder.initial_state(), int8.encoder.initial_state()
    carry32, carry8 = fp32.predictor.initial_carry(1), int8.predictor.initial_carry(1)
    pred32, _ = fp32.predict_step(np.zeros(1, np.int64), carry32)
    pred8, _ = int8.predict_step(np.zeros(1, np.int64), carry8)
    for frame in x[0]:
        enc32, state32, _ = fp32.encode_step(frame[None], state32)
        enc8, state8, _ = int8.encode_step(frame[None], state8)
        logits32, logits8 = fp32.joint(enc32, pred32), int8.joint(enc8, pred8)
        assert np.abs(logits8 - logits32).max() <= 0.02 * np.ptp(logits32)
    tokens = []
    for int8_weights in (False, True):
        stream = Recognizer(spec, flat, int8=int8_weights, max_length=spec.max_length,
                            max_symbols_per_frame=SEARCH["max_symbols_per_frame"]).stream()
        for frame in x[0]:
            stream.accept_frame(frame)
        tokens.append(stream.finish().tokens)
    assert tokens[0] == tokens[1]
    # The projected random encoder emits nothing (all blank): its check is the logits above.
    assert len(tokens[0]) > 3 or projection is not None
    with pytest.raises(ValueError, match="for ONNX"):
        transcribe.make_recognizer(transcribe.parser().parse_args(
            ["--onnx=x", "--int8", "a.wav"]))
    with pytest.raises(ValueError, match="not to a given network"):
        Recognizer(spec, network=fp32, int8=True)


def test_a_model_file_without_a_recognizer_configuration_is_refused(tmp_path):
    path = tmp_path / "params.safetensors"
    model_file.save(path, {"w": np.zeros((2, 2), np.float32)})
    with pytest.raises(SpecError, match="carries no recognizer configuration"):
        Recognizer.load(path)
    model_file.save(path, {"w": np.zeros((2, 2), np.float32)},
                    metadata={"amnet": '{"format": "amnet-device/9"}'})
    with pytest.raises(SpecError, match="format 'amnet-device/9'"):
        Recognizer.load(path)


def test_the_transcribe_cli_reads_any_rate_and_channels_and_reports_bad_files(
        tiny_dense_run, tmp_path):
    import scipy.signal
    import soundfile


    device = tmp_path / "device.safetensors"
    from amnet import export

    export.export_run(tiny_dense_run, device)
    config = rundir.read_run_config(tiny_dense_run)
    source = datasets.open_dataset(config, config.data.test_split)
    example = source[0]
    speech = example["speech"]
    uid = example["id"].decode() if isinstance(example["id"], bytes) else example["id"]
    expected = {json.loads(line)["id"]: json.loads(line)
                for line in (tiny_dense_run / "outputs.jsonl").read_text().splitlines()}[uid]
    clips = tmp_path / "clips"
    clips.mkdir()
    soundfile.write(clips / "a16k.wav", speech, 16_000, subtype="PCM_16")
    soundfile.write(clips / "b16k.flac", speech, 16_000)
    for rate in (8_000, 44_100):
        resampled = scipy.signal.resample_poly(speech / 32768.0, rate // 100, 160)
        stereo = np.stack([resampled, 0.5 * resampled], axis=1)
        soundfile.write(clips / f"c{rate}.wav", stereo, rate, subtype="FLOAT")
    pause = np.zeros(16_000 * 3, np.int16)
    soundfile.write(clips / "d40s.wav", np.concatenate([speech, pause] * 12)[:16_000 * 40],
                    16_000)  # longer than --segment_s: cut at endpoints
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "noise.wav").write_bytes(np.random.default_rng(0).bytes(5000))
    (bad / "empty.wav").write_bytes(b"")
    soundfile.write(bad / "silent0.wav", np.zeros(0, np.int16), 16_000)
    soundfile.write(bad / "long.wav", np.zeros(16_000 * 20, np.int16), 16_000)
    soundfile.write(bad / "nan.wav", np.full(1600, np.nan, np.float32), 16_000, subtype="FLOAT")

    out = transcribe_cli(f"--model={device}", "--format=jsonl", "--words", clips)
    assert out.returncode == 0, out.stderr
    records = {Path(r["id"]).name: r for r in map(json.loads, out.stdout.splitlines())}
    assert sorted(records) == ["a16k.wav", "b16k.flac", "c44100.wav", "c8000.wav", "d40s.wav"]
    cuts = records["d40s.wav"]["segments"]
    assert len(cuts) >= 2 and cuts[0]["start_s"] == 0 and cuts[-1]["end_s"] <= 40
    assert all(c["end_s"] - c["start_s"] <= 30 for c in cuts) and "segments" not in \
        records["a16k.wav"]
    # The corpus's own 16 kHz samples: the training run's transcript, exactly.
    assert records["a16k.wav"]["text"] == records["b16k.flac"]["text"] == expected["greedy"]
    assert records["c44100.wav"]["converted"] == "2 ch 44100 Hz -> mono 16000 Hz"
    assert "converted" not in records["a16k.wav"]
    beam = transcribe_cli(f"--run_dir={tiny_dense_run}", "--decoder=beam_lm",
                       f"--beam={config.lm.beam}", clips / "a16k.wav")
    assert beam.returncode == 0 and beam.stdout.split("\t")[1].rstrip("\n") == \
        expected["beam_lm"], beam.stderr
    (tmp_path / "phrases.txt").write_text("Ledecky\n\nKalisz\n")
    boosted = transcribe_cli(f"--model={device}", "--decoder=beam", "--beam=2",
                          f"--context={tmp_path / 'phrases.txt'}", clips / "a16k.wav")
    assert boosted.returncode == 0 and boosted.stdout.count("\t") == 1, boosted.stderr

    out = transcribe_cli(f"--model={device}", "--max_seconds=15", clips / "a16k.wav", bad,
                      tmp_path / "missing.wav")
    assert out.returncode == 1
    assert out.stdout.count("\t") == 1  # the good file was transcribed
    for name, reason in (("noise.wav", "not a readable audio file"),
                         ("empty.wav", "not a readable audio file"),
                         ("silent0.wav", "no samples"), ("long.wav", "more than the limit"),
                         ("nan.wav", "NaN or infinite"), ("missing.wav", "no such file")):
        assert any(name in line and reason in line for line in out.stderr.splitlines()), \
            (name, out.stderr)
    assert "6 file(s) failed" in out.stderr

    params_only = tmp_path / "params.safetensors"
    model_file.save(params_only, {"w": np.zeros(2, np.float32)})
    out = transcribe_cli(f"--model={params_only}", clips)
    assert out.returncode == 2 and f"{params_only} carries no recognizer configuration" in \
        out.stderr


def test_an_update_applied_on_the_device_is_what_the_recognizer_then_runs(
        tiny_dense_run, tmp_path):
    from amnet import export
    from neuraldiff import package, posthoc, tree

    device = tmp_path / "device.safetensors"
    export.export_run(tiny_dense_run, device)
    base = model_file.read(device)
    rng = np.random.default_rng(0)
    target = {n: (w + rng.normal(0, 0.05, w.shape)).astype(np.float32) if w.ndim == 2 else w
              for n, w in base.params.items()}
    names = tree.Selector().names(tree.unflatten(base.params))
    contents = posthoc.topk_delta(base.params, target, names, 200_000)
    data, server = package.pack("topk", contents, base.params, version=1)
    update = tmp_path / "u.ndiff"
    update.write_bytes(data)
    from neuraldiff import cli

    assert cli.main(["apply", f"--package={update}", f"--model={device}"]) == 0
    updated = Recognizer.load(device)  # the configuration came through the update
    frame = np.random.default_rng(1).normal(size=(1, updated.spec.model["input_dim"]))
    logits = []
    for params in (None, server, base.params):
        recognizer = updated if params is None else Recognizer(updated.spec, params)
        network = recognizer.network
        enc, _, _ = network.encode_step(frame.astype(np.float32),
                                        network.encoder.initial_state())
        logits.append(network.joint(enc, np.zeros_like(enc)))
    np.testing.assert_array_equal(logits[0], logits[1])  # the device runs the server's model
    assert not np.array_equal(logits[0], logits[2])  # and not the old one


def _contains(tokens, phrase):
    return any(tokens[i:i + len(phrase)] == phrase for i in range(len(tokens)))


def test_biasing_makes_the_search_emit_a_boosted_phrase_in_jax_and_on_the_device():
    import itertools

    model, params, flat, spec, x = random_model(("dense",))
    lengths = np.array([x.shape[1]])
    plain = decoding.beam_decode(model, params, x, lengths, beam=3, **SEARCH)
    plain = np.asarray(plain[0][0, :int(plain[1][0])]).tolist()
    phrase = next(list(p) for p in itertools.product(range(1, 7), repeat=3)
                  if not _contains(plain, list(p)))
    for phrases, bonus in (([], 5.0), ([phrase], 5.0)):
        context = lm.build_context([phrase] if phrases else [], 7)
        tokens, token_lengths = decoding.beam_decode(
            model, params, x, lengths, beam=3, **SEARCH,
            fusion=decoding.Fusion.of([context], [bonus]))
        expected = np.asarray(tokens[0, :int(token_lengths[0])]).tolist()
        stream = Recognizer(spec, flat, beam=3, max_length=spec.max_length,
                            max_symbols_per_frame=SEARCH["max_symbols_per_frame"],
                            fusion=search.Fusion.of([context], [bonus])).stream()
        for frame in x[0]:
            stream.accept_frame(frame)
        assert stream.finish().tokens == expected
        if phrases:  # the boosted phrase is recognized, which plain search did not emit
            assert _contains(expected, phrase) and not _contains(plain, phrase), (plain, expected)
        else:  # an empty list is plain beam search
            assert expected == plain


_VALID_WAV = wav_bytes(np.random.default_rng(0).integers(-3000, 3000, 4000))


def _random_audio_bytes():
    from hypothesis import strategies as st

    truncated = st.integers(0, len(_VALID_WAV)).map(lambda n: _VALID_WAV[:n])
    flipped = st.tuples(st.integers(0, 43), st.integers(0, 255)).map(
        lambda p: _VALID_WAV[:p[0]] + bytes([p[1]]) + _VALID_WAV[p[0] + 1:])  # the header
    return st.one_of(st.binary(max_size=2000), truncated, flipped)


def test_fuzzed_audio_files_give_a_result_or_a_named_error(tmp_path):
    """Random bytes, truncated and corrupted WAV headers (declared lengths and formats
    included), and edge cases: each is an `AudioError` naming the file or a result, never
    another exception; hypothesis, 80 examples."""
    from hypothesis import HealthCheck, given, settings

    from amnet.device import audio

    model, params, flat, spec, _ = random_model(("dense",), num_mels=8)  # 3 x 8 = 24 inputs
    recognizer = Recognizer(spec, flat)
    path = tmp_path / "fuzz.wav"

    def check(data: bytes):
        path.write_bytes(data)
        try:
            clip = audio.read(path, 16_000, max_seconds=60)
        except audio.AudioError as e:
            assert str(path) in str(e)
            return None
        result = recognizer.transcribe(clip.samples)
        log_mels = max(0, (clip.samples.shape[0] - 400) // 160 + 1)
        assert result.frames == log_mels // 3 == len(result.branches)
        return result

    settings(max_examples=80, deadline=None, derandomize=True,
             suppress_health_check=[HealthCheck.function_scoped_fixture])(
        given(_random_audio_bytes())(lambda data: None if check(data) else None))()
    rng = np.random.default_rng(1)
    assert check(wav_bytes(np.zeros(0))) is None  # zero samples: an error
    assert check(wav_bytes(np.ones(1))).text == ""  # one sample: no frame, no text
    assert check(wav_bytes(rng.integers(-999, 999, (8000, 8)))).frames == 16  # 8 channels
    absurd = bytearray(_VALID_WAV)
    absurd[24:28] = (2**31 - 1).to_bytes(4, "little")  # the header's sample rate
    (tmp_path / "absurd.wav").write_bytes(bytes(absurd))
    with pytest.raises(audio.AudioError, match="invalid header"):  # not 320 GiB of filter
        audio.read(tmp_path / "absurd.wav", 16_000)
    import soundfile

    for bad in (np.nan, np.inf):
        soundfile.write(path, np.full(800, bad, np.float32), 16_000, subtype="FLOAT")
        with pytest.raises(audio.AudioError, match="NaN or infinite"):
            audio.read(path, 16_000)
    soundfile.write(path, np.zeros(16_000 * 61, np.int16), 16_000)  # longer than the limit
    with pytest.raises(audio.AudioError, match="more than the limit"):
        audio.read(path, 16_000, max_seconds=60)


def _long_audio(seconds: float, seed: int = 0) -> np.ndarray:
    """Bursts of noisy tones (0.3-2 s) between silences (0.2-1.5 s), int16, 16 kHz."""
    rng = np.random.default_rng(seed)
    parts, total = [], 0
    while total < seconds * 16_000:
        n = int(rng.uniform(0.3, 2.0) * 16_000)
        t = np.arange(n) / 16_000
        tone = np.sin(2 * np.pi * rng.uniform(100, 3000) * t) * rng.uniform(1000, 8000)
        parts += [tone + rng.normal(0, 500, n),
                  rng.normal(0, 20, int(rng.uniform(0.2, 1.5) * 16_000))]
        total += parts[-2].size + parts[-1].size
    return np.clip(np.concatenate(parts), -32768, 32767).astype(np.int16)


def test_endless_audio_is_cut_at_endpoints_into_segments_decoded_as_alone():
    """The soak test's short version (benchmarks/soak.py runs an hour): 2 minutes through one
    recognizer in 100 ms chunks. Each segment's tokens equal its audio decoded alone, segments
    tile the audio, Python memory does not grow and no segment outgrows max_segment_s."""
    import tracemalloc

    from amnet.device.recognizer import Endpointing

    model, params, flat, spec, _ = random_model(("dense",), num_mels=8)
    recognizer = Recognizer(spec, flat)
    audio = _long_audio(120)
    rules = Endpointing(trailing_silence_after_text_s=0.3, trailing_silence_s=0.6,
                        max_segment_s=3.0)
    chunks = (audio[i:i + 1600] for i in range(0, audio.size, 1600))
    tracemalloc.start()
    segments, memory = [], []
    for segment in recognizer.segments(chunks, rules):
        segments.append(segment)
        memory.append(tracemalloc.get_traced_memory()[0])
    tracemalloc.stop()
    assert len(segments) >= 20 and sum(bool(s.result.tokens) for s in segments) >= 10
    assert segments[0].start == 0 and audio.size - segments[-1].end < 480 + 240
    for before, after in zip(segments, segments[1:], strict=False):
        assert after.start == before.end - 240  # the next frame's window starts there
    for segment in segments:
        alone = recognizer.transcribe(audio[segment.start:segment.end])
        assert alone.tokens == segment.result.tokens
        assert alone.frames == segment.result.frames
    quarter = len(segments) // 4
    assert max(memory[quarter:]) - memory[quarter] < 1 << 20  # < 1 MiB over 3/4 of the run
    # Work per segment stays bounded (no state carried across segments): at most
    # max_segment_s of frames each. (Its wall clock is a benchmark's business, not a test's.)
    assert max(s.result.frames for s in segments) <= round(3.0 / 0.03) + 1


_READER = """
import collections, json, sys, time
from amnet.device.recognizer import Recognizer
seen, errors, end = collections.Counter(), [], time.monotonic() + float(sys.argv[2])
while time.monotonic() < end:
    try:
        r = Recognizer.load(sys.argv[1])
        seen[str(r.network.out_bias.tobytes().hex()[:16])] += 1
    except Exception as e:
        errors.append(repr(e))
print(json.dumps({"seen": seen, "errors": errors[:5]}))
"""


def test_recognizers_loading_while_updates_apply_see_the_old_or_the_new_model(tmp_path):
    """Three processes load the model file in a loop while this one applies full-model
    updates to it (versions 1, 2, ... alternating two models) for 4 seconds: every load
    succeeds (fingerprint checked) and holds one of the two models, never a torn file."""
    from amnet.device.spec import METADATA_KEY
    from neuraldiff import package, posthoc

    _, _, flat, spec, _ = random_model(("dense",), num_mels=8)
    other = {n: (w + 0.5).astype(np.float32) for n, w in flat.items()}
    device = tmp_path / "device.safetensors"
    model_file.save(device, flat, metadata={METADATA_KEY: spec.to_json()})
    models = [flat, other]
    expected = {m["output_bias"].tobytes().hex()[:16] for m in models}
    readers = [subprocess.Popen([sys.executable, "-c", _READER, str(device), "4"], cwd=ROOT,
                                env=cpu_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True) for _ in range(3)]
    import time

    applied, version, end = 0, 0, time.monotonic() + 4.5
    while time.monotonic() < end:
        current, target = models[version % 2], models[(version + 1) % 2]
        data, _ = package.pack("full", posthoc.full_model(target), current, version=version + 1)
        model_file.apply_to_file(device, data)
        version += 1
        applied += 1
    outputs = [r.communicate(timeout=HANG_GUARD_S) for r in readers]
    assert applied >= 5
    for stdout, stderr in outputs:
        assert stdout, stderr
        report = json.loads(stdout)
        print(f"{applied} updates applied; a reader loaded {report['seen']}")
        assert report["errors"] == [], report["errors"]
        assert set(report["seen"]) <= expected and sum(report["seen"].values()) >= 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["device.safetensors"]
