"""Log-mel features in NumPy, as `amnet.rnnt.frontend` computes them in JAX, whole or streaming.

Same definition (frames of `win_length` samples every `hop_length`, periodic Hann window,
|rfft(n_fft)|^2, HTK mel filters, log with a floor, per-channel normalization, `stack` frames
stacked with stride `stack`). `FeatureStream` turns audio arriving in chunks of any size into the
same encoder frames as the whole utterance gives: a frame is emitted as soon as its last sample
has arrived, so the features of a stream never depend on how it was chunked.
"""

from __future__ import annotations

import numpy as np

from amnet.rnnt.mel import mel_filterbank


class Frontend:
    """Features of one frontend configuration (the `frontend` dict of `spec.DeviceSpec`)."""

    def __init__(self, config: dict):
        self.sample_rate = int(config["sample_rate"])
        self.win, self.hop = int(config["win_length"]), int(config["hop_length"])  # samples
        self.n_fft, self.stack = int(config["n_fft"]), int(config["stack"])
        self.floor = np.float32(config["log_floor"])
        self.filters = mel_filterbank(self.sample_rate, self.n_fft, int(config["num_mels"]),
                                   float(config["f_min"]), float(config["f_max"]))
        self.mean = np.asarray(config["feature_mean"], np.float32)
        self.std = np.asarray(config["feature_std"], np.float32)
        self.window = np.hanning(self.win + 1)[:-1].astype(np.float32)

    @property
    def frame_dim(self) -> int:
        """Features per encoder frame (stack x num_mels)."""
        return self.stack * self.filters.shape[1]

    @property
    def samples_per_frame(self) -> int:
        """Samples between two encoder frames (hop x stack)."""
        return self.hop * self.stack

    def log_mel(self, audio: np.ndarray) -> np.ndarray:
        """audio `[S]` float32 in [-1, 1] -> normalized log-mels `[F, num_mels]`,
        F = 1 + (S - win) // hop (0 if S < win)."""
        count = max(0, (audio.shape[0] - self.win) // self.hop + 1)
        if count == 0:
            return np.zeros((0, self.filters.shape[1]), np.float32)
        index = np.arange(count)[:, None] * self.hop + np.arange(self.win)[None, :]
        spectrum = np.fft.rfft(audio[index] * self.window, n=self.n_fft)
        power = (spectrum.real ** 2 + spectrum.imag ** 2).astype(np.float32)
        # One [1, n_fft/2+1] @ filters product per frame: a frame's features do not depend on
        # how many frames are computed with it (BLAS blocking would change the last bit).
        mel = np.matmul(power[:, None, :], self.filters)[:, 0]
        return (np.log(np.maximum(mel, self.floor)) - self.mean) / self.std

    def encoder_frames(self, audio: np.ndarray) -> np.ndarray:
        """audio `[S]` -> stacked frames `[F // stack, stack * num_mels]` (a partial last group
        is dropped, as in the JAX frontend)."""
        features = self.log_mel(audio)
        kept = features.shape[0] // self.stack * self.stack
        return features[:kept].reshape(kept // self.stack, self.frame_dim)


def to_float(audio: np.ndarray) -> np.ndarray:
    """int16 samples (or floats in [-1, 1]) -> float32 in [-1, 1], as the JAX frontend scales
    them."""
    audio = np.asarray(audio)
    if np.issubdtype(audio.dtype, np.integer):
        return audio.astype(np.float32) / np.float32(32768.0)
    return audio.astype(np.float32)


class FeatureStream:
    """Audio in chunks -> encoder frames `[n, stack * num_mels]` as soon as they are complete."""

    def __init__(self, frontend: Frontend):
        self.frontend = frontend
        self._buffer = np.zeros(0, np.float32)  # samples from the next frame's start on
        self._pending = np.zeros((0, frontend.filters.shape[1]), np.float32)  # < stack frames

    def accept(self, samples: np.ndarray) -> np.ndarray:
        f = self.frontend
        self._buffer = np.concatenate([self._buffer, to_float(samples).ravel()])
        mels = f.log_mel(self._buffer)
        self._buffer = self._buffer[mels.shape[0] * f.hop:]
        self._pending = np.concatenate([self._pending, mels])
        kept = self._pending.shape[0] // f.stack * f.stack
        frames = self._pending[:kept].reshape(kept // f.stack, f.frame_dim)
        self._pending = self._pending[kept:]
        return frames
