"""The JAX frontend against an independent reference (librosa), and its padding semantics."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from amnet.rnnt import frontend, mel

librosa = pytest.importorskip("librosa")

CONFIG = frontend.FrontendConfig()
# float32 FFT in XLA vs float64 in librosa: log-mel agrees to this absolute tolerance (nats)
# wherever the mel energy is well above the floor.
LOG_MEL_ATOL = 2e-3


def _reference_log_mel(audio: np.ndarray) -> np.ndarray:
    """librosa's STFT and HTK mel filterbank with the same settings, in float64.

    librosa centers the `win_length` window inside each `n_fft` frame; padding the signal by
    that offset on both sides makes its frame i cover our samples [i * hop, i * hop + win).
    """
    offset = (CONFIG.n_fft - CONFIG.win_length) // 2
    mel = librosa.feature.melspectrogram(
        y=np.pad(audio.astype(np.float64) / 32768.0, offset), sr=CONFIG.sample_rate,
        n_fft=CONFIG.n_fft,
        hop_length=CONFIG.hop_length, win_length=CONFIG.win_length, window="hann", center=False,
        power=2.0, n_mels=CONFIG.num_mels, fmin=CONFIG.f_min, fmax=CONFIG.f_max, htk=True,
        norm=None)
    return np.log(np.maximum(mel, CONFIG.log_floor)).T  # [F, num_mels]


def _speechlike(rng, n):
    t = np.arange(n) / CONFIG.sample_rate
    tone = sum(np.sin(2 * np.pi * f * t) / (k + 1) for k, f in enumerate((180, 360, 1200, 2500)))
    signal = 8000 * tone * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t)) + 500 * rng.standard_normal(n)
    return np.clip(signal, -32768, 32767).astype(np.int16)


def test_filterbank_matches_librosa():
    ours = mel.mel_filterbank(CONFIG.sample_rate, CONFIG.n_fft, CONFIG.num_mels, CONFIG.f_min,
                              CONFIG.f_max)
    ref = librosa.filters.mel(sr=CONFIG.sample_rate, n_fft=CONFIG.n_fft, n_mels=CONFIG.num_mels,
                              fmin=CONFIG.f_min, fmax=CONFIG.f_max, htk=True, norm=None).T
    np.testing.assert_allclose(ours, ref, atol=1e-5)


def test_log_mel_matches_librosa():
    rng = np.random.default_rng(0)
    audio = _speechlike(rng, 16_000)
    features, lengths = frontend.log_mel(jnp.asarray(audio[None]), jnp.asarray([audio.size]))
    ref = _reference_log_mel(audio)
    assert features.shape == (1, *ref.shape) and int(lengths[0]) == ref.shape[0] == 98
    np.testing.assert_allclose(np.asarray(features[0]), ref, atol=LOG_MEL_ATOL)


def test_padding_does_not_change_valid_frames():
    rng = np.random.default_rng(1)
    short, long = _speechlike(rng, 8_000), _speechlike(rng, 12_000)
    batch = np.zeros((2, 12_000), np.int16)
    batch[0, :8_000], batch[1] = short, long
    features, lengths = jax.jit(frontend.log_mel)(batch, np.array([8_000, 12_000]))
    alone, _ = frontend.log_mel(short[None], np.array([8_000]))
    n = int(lengths[0])
    assert lengths.tolist() == [48, 73]
    np.testing.assert_allclose(features[0, :n], alone[0], atol=1e-4)
    assert np.all(np.asarray(features[0, n:]) == 0.0)


def test_num_frames_edge_cases():
    assert [int(frontend.num_frames(n, CONFIG)) for n in (0, 399, 400, 559, 560)] == [0, 0, 1, 1, 2]


def test_stacking_shapes_and_lengths():
    features = jnp.arange(2 * 10 * 4, dtype=jnp.float32).reshape(2, 10, 4)
    stacked, lengths = frontend.stack_frames(features, jnp.array([10, 7]), 3)
    assert stacked.shape == (2, 3, 12) and lengths.tolist() == [3, 2]
    np.testing.assert_array_equal(stacked[0, 1], features[0, 3:6].reshape(-1))


def test_featurize_gives_30ms_frames():
    audio = np.zeros((3, 48_000), np.int16)
    features, lengths = frontend.featurize(audio, np.array([48_000, 16_000, 0]))
    assert features.shape == (3, 99, 240)
    assert lengths.tolist() == [99, 32, 0]


def test_spec_augment_masks_only_within_bounds():
    config = frontend.SpecAugmentConfig(num_freq_masks=2, max_freq_width=10, num_time_masks=2,
                                        max_time_ratio=0.1)
    features = jnp.ones((4, 100, 80))
    lengths = jnp.array([100, 60, 30, 5])
    out = np.asarray(frontend.spec_augment(jax.random.key(0), features, lengths, config))
    for b in range(4):
        masked_channels = np.all(out[b, : int(lengths[b])] == 0, axis=0).sum()
        assert masked_channels <= 2 * (config.max_freq_width - 1)
        masked_frames = np.all(out[b] == 0, axis=1).sum()
        assert masked_frames <= 2 * max(1, int(lengths[b] * 0.1))
    assert (out == 0).any() and (out == 1).any()
    again = np.asarray(frontend.spec_augment(jax.random.key(0), features, lengths, config))
    np.testing.assert_array_equal(out, again)
