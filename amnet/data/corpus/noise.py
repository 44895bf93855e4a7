"""Additive noise at a target signal-to-noise ratio, from a seeded generator.

Colors: power spectral density proportional to 1/f^k with k = 0 (white), 1 (pink), 2 (brown),
shaped in the frequency domain from Gaussian noise.
"""

from __future__ import annotations

import numpy as np

NOISE_EXPONENTS = {"white": 0.0, "pink": 1.0, "brown": 2.0}


def colored_noise(rng: np.random.Generator, num_samples: int, color: str) -> np.ndarray:
    """Unit-variance noise `[S]` (float64) with PSD ~ 1/f^k for `color` in NOISE_EXPONENTS."""
    if color not in NOISE_EXPONENTS:
        raise ValueError(f"unknown noise color {color!r}; expected one of "
                         f"{sorted(NOISE_EXPONENTS)}")
    spectrum = np.fft.rfft(rng.standard_normal(num_samples))
    freqs = np.arange(len(spectrum), dtype=np.float64)
    freqs[0] = 1.0  # leave DC unscaled instead of dividing by zero
    spectrum /= freqs ** (NOISE_EXPONENTS[color] / 2.0)
    noise = np.fft.irfft(spectrum, n=num_samples)
    noise -= noise.mean()
    return noise / max(noise.std(), 1e-12)


def add_noise(speech: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """Mixes `noise` into int16 `speech` `[S]` at `snr_db` (signal power over the whole clip)."""
    signal = speech.astype(np.float64)
    signal_power = np.mean(signal**2) if signal.size else 0.0
    scale = np.sqrt(signal_power / (10.0 ** (snr_db / 10.0))) / max(noise.std(), 1e-12)
    mixed = signal + scale * noise
    return np.clip(np.round(mixed), -32768, 32767).astype(np.int16)
