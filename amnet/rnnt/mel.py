"""The mel filterbank (NumPy only): shared by the JAX frontend and the device runtime.

HTK mel scale, triangular filters between `f_min` and `f_max` with unit peaks (no area
normalization), over the `n_fft // 2 + 1` bins of a real FFT.
"""

from __future__ import annotations

import functools

import numpy as np


def hz_to_mel(hz):
    """HTK mel scale."""
    return 2595.0 * np.log10(1.0 + np.asarray(hz, dtype=np.float64) / 700.0)


def mel_to_hz(mel):
    return 700.0 * (10.0 ** (np.asarray(mel, dtype=np.float64) / 2595.0) - 1.0)


@functools.lru_cache(maxsize=8)
def mel_filterbank(sample_rate: int, n_fft: int, num_mels: int, f_min: float,
                   f_max: float) -> np.ndarray:
    """Triangular filters `[n_fft // 2 + 1, num_mels]` (float32), peaks at 1."""
    bin_hz = np.linspace(0.0, sample_rate / 2.0, n_fft // 2 + 1)
    edges = mel_to_hz(np.linspace(hz_to_mel(f_min), hz_to_mel(f_max), num_mels + 2))
    left, center, right = edges[:-2], edges[1:-1], edges[2:]
    rising = (bin_hz[:, None] - left) / (center - left)
    falling = (right - bin_hz[:, None]) / (right - center)
    return np.maximum(0.0, np.minimum(rising, falling)).astype(np.float32)
