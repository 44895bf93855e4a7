"""Speed perturbation (Ko et al. 2015, as in Kaldi and icefall): replay a waveform at speed f.

    y = perturb(speech, 1.1)   # int16 [S] -> int16 [ceil(S * q / p)], f = p / q

Speed f keeps the sample rate and resamples the signal by q / p (f = 1.1: 10/11, 9% fewer
samples, pitch and tempo up by 10%; f = 0.9: 10/9). `scipy.signal.resample_poly` applies
the anti-aliasing filter. The training pipeline adds one copy of every example per factor
(`PipelineConfig.speed_factors`, e.g. 0.9, 1.0, 1.1: three times the epoch), each bucketed by
its own length; evaluation never perturbs.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np

MAX_DENOMINATOR = 100  # factors are rounded to p / q with q <= this (0.9 = 9/10 exactly)


def ratio(factor: float) -> tuple[int, int]:
    """(p, q) with p / q = factor, q <= MAX_DENOMINATOR.

    Raises:
      ValueError: the factor is not in (0.5, 2].
    """
    if not 0.5 < factor <= 2.0:
        raise ValueError(f"speed factor must be in (0.5, 2], got {factor}")
    f = Fraction(factor).limit_denominator(MAX_DENOMINATOR)
    return f.numerator, f.denominator


def perturbed_length(num_samples: int, factor: float) -> int:
    """Samples of a `num_samples` waveform replayed at speed `factor`."""
    p, q = ratio(factor)
    return -(-num_samples * q // p)


def perturb(speech: np.ndarray, factor: float) -> np.ndarray:
    """int16 speech `[S]` replayed at speed `factor` -> int16 `[perturbed_length(S, factor)]`."""
    p, q = ratio(factor)
    if p == q:
        return speech
    from scipy import signal  # imported here: 0.9 s that runs without perturbation skip

    out = signal.resample_poly(speech.astype(np.float32), q, p)
    return np.clip(np.rint(out), -32768, 32767).astype(np.int16)
