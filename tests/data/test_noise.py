"""Additive noise hits the requested SNR and the requested spectral tilt."""

import numpy as np
import pytest

from amnet.data.corpus import noise


@pytest.mark.parametrize("snr_db", [0.0, 10.0, 25.0])
def test_mixture_has_the_requested_snr(snr_db):
    rng = np.random.default_rng(0)
    speech = (3000 * np.sin(np.arange(32_000) * 0.05)).astype(np.int16)
    mixed = noise.add_noise(speech, noise.colored_noise(rng, speech.size, "pink"), snr_db)
    residual = mixed.astype(np.float64) - speech
    measured = 10 * np.log10(np.mean(speech.astype(np.float64) ** 2) / np.mean(residual**2))
    assert abs(measured - snr_db) < 0.1


def test_colors_tilt_the_spectrum():
    rng = np.random.default_rng(1)
    power = {}
    for color in noise.NOISE_EXPONENTS:
        spectrum = np.abs(np.fft.rfft(noise.colored_noise(rng, 1 << 15, color))) ** 2
        power[color] = spectrum[100:1000].mean() / spectrum[10_000:15_000].mean()
    assert power["white"] < 2 < power["pink"] < power["brown"]


def test_unknown_color_is_named():
    with pytest.raises(ValueError, match="violet"):
        noise.colored_noise(np.random.default_rng(0), 10, "violet")
