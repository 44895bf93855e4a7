"""Speech frontend in JAX: log-mel features, frame stacking, SpecAugment.

Runs inside the jitted train/eval step (on the accelerator), on padded int16 audio.

log-mel: frames of `win_length` samples every `hop_length` (no centering: frame i covers
samples [i*hop, i*hop + win)), periodic Hann window, |rfft(n_fft)|^2, HTK-scale triangular mel
filters (`amnet.rnnt.mel`: unit peak, no area normalization) between `f_min` and `f_max`, then
`log(max(mel, log_floor))`, normalized as `(x - feature_mean) / feature_std` (scalars, or one
value per mel channel: global CMVN, statistics of the training split from `amnet.rnnt.cmvn`). A
waveform of L samples gives `1 + (L - win) // hop` frames (0 if L < win); padded frames are
zeroed. SpecAugment fills its masks with 0, the normalized features' mean under CMVN.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from amnet.rnnt.mel import mel_filterbank


@dataclasses.dataclass(frozen=True)
class FrontendConfig:
    sample_rate: int = 16_000
    win_length: int = 400  # 25 ms
    hop_length: int = 160  # 10 ms
    n_fft: int = 512
    num_mels: int = 80
    f_min: float = 20.0
    f_max: float = 8_000.0
    log_floor: float = 1e-6
    # Global feature normalization (x - mean) / std, fixed per corpus (streaming-friendly):
    # scalars, or per-channel tuples of `num_mels` values (CMVN, `amnet.rnnt.cmvn`).
    feature_mean: float | tuple[float, ...] = 0.0
    feature_std: float | tuple[float, ...] = 1.0

    def __post_init__(self):
        for name in ("feature_mean", "feature_std"):
            value = getattr(self, name)
            if isinstance(value, (list, tuple)):
                value = tuple(float(v) for v in value)
                if len(value) != self.num_mels:
                    raise ValueError(f"{name} has {len(value)} values for {self.num_mels} mel "
                                     "channels")
                object.__setattr__(self, name, value)
        if min(np.atleast_1d(self.feature_std)) <= 0:
            raise ValueError("feature_std must be positive")
    stack: int = 3  # frames stacked (and the stride) -> 30 ms encoder frames


@dataclasses.dataclass(frozen=True)
class SpecAugmentConfig:
    num_freq_masks: int = 2
    max_freq_width: int = 15  # mel channels
    num_time_masks: int = 2
    max_time_ratio: float = 0.05  # of each utterance's frames, per mask


def num_frames(num_samples, config: FrontendConfig):
    """Frames produced from `num_samples` samples (works on ints and arrays)."""
    return jnp.maximum(0, (num_samples - config.win_length) // config.hop_length + 1)


def log_mel(audio: jax.Array, lengths: jax.Array,
            config: FrontendConfig = FrontendConfig()) -> tuple[jax.Array, jax.Array]:
    """Log-mel features.

    Args:
      audio: `[B, S]` int16 (or float in [-1, 1]) padded waveforms.
      lengths: `[B]` valid samples per waveform.
    Returns:
      features `[B, F, num_mels]` float32 with F = num_frames(S), zero on padded frames, and
      frame lengths `[B]` int32.
    """
    if jnp.issubdtype(audio.dtype, jnp.integer):
        audio = audio.astype(jnp.float32) / 32768.0
    frames_total = max(0, (audio.shape[1] - config.win_length) // config.hop_length + 1)
    starts = jnp.arange(frames_total) * config.hop_length
    frames = audio[:, starts[:, None] + jnp.arange(config.win_length)[None, :]]  # [B, F, W]
    window = jnp.asarray(np.hanning(config.win_length + 1)[:-1], dtype=jnp.float32)
    spectrum = jnp.fft.rfft(frames * window, n=config.n_fft)  # [B, F, n_fft // 2 + 1]
    power = jnp.real(spectrum) ** 2 + jnp.imag(spectrum) ** 2
    mel = power @ jnp.asarray(mel_filterbank(config.sample_rate, config.n_fft, config.num_mels,
                                             config.f_min, config.f_max))
    features = (jnp.log(jnp.maximum(mel, config.log_floor))
                - jnp.asarray(config.feature_mean, jnp.float32)) / jnp.asarray(
                    config.feature_std, jnp.float32)
    frame_lengths = num_frames(lengths, config).astype(jnp.int32)
    mask = jnp.arange(frames_total)[None, :] < frame_lengths[:, None]
    return jnp.where(mask[..., None], features, 0.0), frame_lengths


def stack_frames(features: jax.Array, lengths: jax.Array,
                 factor: int) -> tuple[jax.Array, jax.Array]:
    """Stacks `factor` consecutive frames with stride `factor`.

    `[B, F, D]` -> `[B, F // factor, factor * D]`; lengths become `lengths // factor` (a partial
    last group is dropped, as in the encoder's frame rate).
    """
    batch, frames, dim = features.shape
    kept = frames // factor * factor
    stacked = features[:, :kept].reshape(batch, frames // factor, factor * dim)
    return stacked, lengths // factor


def spec_augment(rng: jax.Array, features: jax.Array, lengths: jax.Array,
                 config: SpecAugmentConfig = SpecAugmentConfig()) -> jax.Array:
    """Frequency and time masking: masked values are set to 0, the padded-frame value and,
    on CMVN-normalized features, every channel's training mean.

    Args:
      features: `[B, F, D]` log-mel features; lengths `[B]` valid frames.
    Returns:
      `[B, F, D]` with `num_freq_masks` bands of width < max_freq_width and `num_time_masks`
      spans of width < max_time_ratio * length zeroed per utterance.
    """
    batch, frames, dim = features.shape
    keep = jnp.ones((batch, frames, dim), dtype=bool)
    freq_key, time_key = jax.random.split(rng)
    for key in jax.random.split(freq_key, config.num_freq_masks):
        w_key, s_key = jax.random.split(key)
        width = jax.random.randint(w_key, (batch, 1), 0, config.max_freq_width)
        start = jax.random.randint(s_key, (batch, 1), 0, dim) * (dim - width) // dim
        band = (jnp.arange(dim)[None] >= start) & (jnp.arange(dim)[None] < start + width)
        keep &= ~band[:, None, :]
    for key in jax.random.split(time_key, config.num_time_masks):
        w_key, s_key = jax.random.split(key)
        max_width = jnp.maximum(1, (lengths * config.max_time_ratio).astype(jnp.int32))
        width = (jax.random.uniform(w_key, (batch,)) * max_width).astype(jnp.int32)
        start = (jax.random.uniform(s_key, (batch,)) * jnp.maximum(lengths - width, 1)).astype(
            jnp.int32)
        span = ((jnp.arange(frames)[None] >= start[:, None])
                & (jnp.arange(frames)[None] < (start + width)[:, None]))
        keep &= ~span[:, :, None]
    return jnp.where(keep, features, 0.0)


def featurize(audio: jax.Array, lengths: jax.Array, config: FrontendConfig = FrontendConfig(),
              *, augment: SpecAugmentConfig | None = None,
              rng: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """Waveforms `[B, S]` -> encoder inputs `[B, T, stack * num_mels]` and lengths `[B]`."""
    features, frame_lengths = log_mel(audio, lengths, config)
    if augment is not None:
        if rng is None:
            raise ValueError("spec_augment needs an rng key")
        features = spec_augment(rng, features, frame_lengths, augment)
    return stack_frames(features, frame_lengths, config.stack)
