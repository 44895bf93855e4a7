"""ONNX export of the device network (`amnet.device.onnx_model`): the graphs run by
onnxruntime give the NumPy runtime's encoder outputs, predictor outputs and logits (1e-5
absolute), the same transcripts, and dynamic int8 copies stay close; what cannot be exported
is named."""

import numpy as np
import pytest

from amnet.device import onnx_model
from amnet.device.network import Network
from amnet.device.recognizer import Recognizer
from amnet.device.spec import METADATA_KEY, SpecError
from neuraldiff import model_file
from tests.helpers import SEARCH, random_model, transcribe_cli, wav_bytes

pytest.importorskip("onnx", reason="the ONNX tests need the extra `onnx`")
pytest.importorskip("onnxruntime", reason="the ONNX tests need the extra `onnx`")


def _exported(tmp_path, predictor, projection=None, branches=("dense",)):
    _, _, flat, spec, x = random_model(branches, predictor, num_mels=8, projection=projection)
    path = tmp_path / "device.safetensors"
    model_file.save(path, flat, metadata={METADATA_KEY: spec.to_json()})
    return path, flat, spec, x


@pytest.mark.parametrize("predictor, projection", [("lstm", 8), ("stateless", None)])
def test_the_graphs_compute_what_the_numpy_network_does(tmp_path, predictor, projection):
    path, flat, spec, x = _exported(tmp_path, predictor, projection)
    fp32 = onnx_model.export(path, tmp_path / "fp32")
    int8 = onnx_model.quantize(fp32, tmp_path / "int8")
    reference = Network(spec, flat)
    for directory, atol in ((fp32, 1e-5), (int8, None)):
        network = onnx_model.OnnxNetwork(directory)
        assert network.spec.to_json() == spec.to_json() and network.blank == reference.blank
        # The encoder, frame by frame, with its states carried through the graph.
        ours, theirs = network.encoder.initial_state(), reference.encoder.initial_state()
        enc, expected_enc = [], []
        for frame in x[0]:
            out, ours, branch = network.encode_step(frame[None], ours)
            want, theirs, _ = reference.encode_step(frame[None], theirs)
            enc.append(out[0])
            expected_enc.append(want[0])
            assert branch == 0
        enc, expected_enc = np.stack(enc), np.stack(expected_enc)
        # The predictor on a batch of 3 hypotheses, and the joint broadcast over it.
        carry, want_carry = (network.predictor.initial_carry(3),
                             reference.predictor.initial_carry(3))
        for tokens in ([0, 0, 0], [3, 1, 4], [1, 5, 2]):
            pred, carry = network.predict_step(np.array(tokens, np.int32), carry)
            want_pred, want_carry = reference.predict_step(np.array(tokens, np.int32),
                                                           want_carry)
        logits = network.joint(enc[5:6], pred)
        want_logits = reference.joint(expected_enc[5:6], want_pred)
        assert logits.shape == want_logits.shape == (3, 7)
        if atol is not None:
            for a, b in ((enc, expected_enc), (pred, want_pred), (logits, want_logits)):
                np.testing.assert_allclose(a, b, atol=atol)
        else:  # int8 weights: close, not equal
            scale = np.abs(want_logits).max()
            assert 0 < np.abs(logits - want_logits).max() < 0.1 * scale

    # The same transcripts, greedy and beam, through the recognizer.
    network = onnx_model.OnnxNetwork(fp32)
    for kwargs in (dict(beam=1), dict(beam=3)):
        texts = []
        for recognizer in (Recognizer(spec, flat, max_length=spec.max_length,
                                      max_symbols_per_frame=SEARCH["max_symbols_per_frame"],
                                      **kwargs),
                           Recognizer(spec, network=network, max_length=spec.max_length,
                                      max_symbols_per_frame=SEARCH["max_symbols_per_frame"],
                                      **kwargs)):
            stream = recognizer.stream()
            for frame in x[0]:
                stream.accept_frame(frame)
            texts.append(stream.finish().tokens)
        assert texts[0] == texts[1], kwargs
        assert projection or len(texts[0]) > 0  # the model emits labels


def test_the_cli_exports_and_transcribe_reads_the_graphs(tmp_path):
    path, _, _, _ = _exported(tmp_path, "lstm")
    assert onnx_model.main([f"--model={path}", f"--out={tmp_path / 'fp32'}",
                            f"--int8={tmp_path / 'int8'}"]) == 0
    assert (tmp_path / "int8" / "encoder.onnx").stat().st_size < \
        (tmp_path / "fp32" / "encoder.onnx").stat().st_size
    assert (tmp_path / "fp32" / "tokens.txt").read_text().splitlines() == [
        f"{t} {i}" for i, t in enumerate("_abcdef")]
    wav = tmp_path / "clip.wav"
    wav.write_bytes(wav_bytes((np.random.default_rng(0).normal(0, 3000, 16_000)).astype(
        np.int16)))
    numpy_out = transcribe_cli(f"--model={path}", wav)
    onnx_out = transcribe_cli(f"--onnx={tmp_path / 'fp32'}", wav)
    assert numpy_out.returncode == onnx_out.returncode == 0, onnx_out.stderr
    assert numpy_out.stdout == onnx_out.stdout
    missing = transcribe_cli(f"--onnx={tmp_path}", wav)
    assert missing.returncode != 0 and "no encoder.onnx, decoder.onnx, joiner.onnx" in \
        missing.stderr


def test_a_branched_encoder_is_refused_by_name(tmp_path):
    path, _, _, _ = _exported(tmp_path, "lstm", branches=("dense", "lowrank(3)", "sparse(0.8)"))
    with pytest.raises(SpecError, match=r"dense single-branch encoder, not \['dense', "
                                        r"'lowrank\(3\)', 'sparse\(0.8\)'\]"):
        onnx_model.export(path, tmp_path / "out")
    assert onnx_model.main([f"--model={path}", f"--out={tmp_path / 'out'}"]) == 1


def test_an_initializer_name_is_reused_only_for_the_same_value():
    g = onnx_model._Graph()
    assert g.const("w", np.ones((2, 3), np.float32)) == "w"
    assert g.const("w", np.ones((2, 3), np.float32)) == "w"  # a layer unrolled: one copy
    assert len(g.initializers) == 1
    with pytest.raises(ValueError, match=r"'w' added twice with different values"):
        g.const("w", np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match=r"float32\[2, 3\] and int64\[\]"):
        g.const("w", np.array(1, np.int64))
