"""Reading audio files for recognition: any sample rate and channel count, made model-ready.

WAV, FLAC and the other formats of libsndfile (`soundfile`); the standard library's `wave`
reads PCM WAV when soundfile is missing. Channels are averaged to mono; other sample rates are
resampled with a polyphase filter (`scipy.signal.resample_poly`, the ratio reduced by its gcd).
Every problem is an `AudioError` naming the file: unreadable or not audio, a sample rate outside
1-768 kHz (a corrupt header: resampling from it would need gigabytes), empty, longer than
`max_seconds`, non-finite samples.
"""

from __future__ import annotations

import dataclasses
import math
import wave
from pathlib import Path

import numpy as np
import scipy.signal

EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".aiff", ".aif")
RATES = (1_000, 768_000)  # sample rates read (Hz): a header outside is corrupt


class AudioError(ValueError):
    """An audio file that cannot be recognized (the message names the file and why)."""


@dataclasses.dataclass(frozen=True)
class Audio:
    samples: np.ndarray  # [S] float32 in [-1, 1], mono, at `sample_rate`
    sample_rate: int
    source_rate: int  # the file's sample rate
    channels: int  # the file's channel count

    @property
    def seconds(self) -> float:
        return self.samples.shape[0] / self.sample_rate


def _frame_count(path: Path) -> tuple[int, int, int]:
    """(frames, rate, channels) from the header, before any sample is read."""
    try:
        import soundfile

        info = soundfile.info(str(path))
        return info.frames, info.samplerate, info.channels
    except ImportError:
        pass
    except Exception as e:  # soundfile raises RuntimeError/LibsndfileError for non-audio
        raise AudioError(f"{path}: not a readable audio file ({e})") from None
    try:
        with wave.open(str(path), "rb") as f:
            return f.getnframes(), f.getframerate(), f.getnchannels()
    except (wave.Error, EOFError, OSError) as e:
        raise AudioError(f"{path}: not a readable audio file ({e})") from None


def _read_samples(path: Path) -> tuple[np.ndarray, int]:
    """[S, C] float32 and the rate."""
    try:
        import soundfile

        data, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
        return data, rate
    except ImportError:
        pass
    except Exception as e:
        raise AudioError(f"{path}: not a readable audio file ({e})") from None
    try:
        with wave.open(str(path), "rb") as f:
            width, channels, rate = f.getsampwidth(), f.getnchannels(), f.getframerate()
            raw = f.readframes(f.getnframes())
    except (wave.Error, EOFError, OSError) as e:
        raise AudioError(f"{path}: not a readable audio file ({e})") from None
    if width != 2:
        raise AudioError(f"{path}: {8 * width}-bit WAV; without soundfile only 16-bit PCM is "
                         "read (pip install soundfile)")
    whole = len(raw) // (2 * channels) * 2 * channels  # a truncated last frame is dropped
    data = np.frombuffer(raw[:whole], "<i2").reshape(-1, channels).astype(np.float32) / 32768.0
    return data, rate


def read(path: str | Path, sample_rate: int, *, max_seconds: float = 3600.0) -> Audio:
    """The file as mono float32 samples at `sample_rate`.

    Raises:
      AudioError: unreadable, not audio, empty, longer than `max_seconds` (checked from the
        header, before reading), or with NaN/inf samples.
    """
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"{path}: no such file")
    frames, rate, channels = _frame_count(path)
    if not RATES[0] <= rate <= RATES[1] or channels <= 0:
        raise AudioError(f"{path}: invalid header (rate {rate} Hz, {channels} channels; rates "
                         f"{RATES[0]}-{RATES[1]} Hz are read)")
    if frames > max_seconds * rate:
        raise AudioError(f"{path}: {frames / rate:.0f} s of audio, more than the limit of "
                         f"{max_seconds:g} s (--max_seconds)")
    data, rate = _read_samples(path)
    if data.shape[0] == 0:
        raise AudioError(f"{path}: no samples")
    if not np.all(np.isfinite(data)):
        raise AudioError(f"{path}: NaN or infinite samples")
    mono = data.mean(axis=1, dtype=np.float32) if data.shape[1] > 1 else data[:, 0]
    if rate != sample_rate:
        g = math.gcd(rate, sample_rate)
        mono = scipy.signal.resample_poly(mono, sample_rate // g, rate // g).astype(np.float32)
    return Audio(np.clip(mono, -1.0, 1.0), sample_rate, rate, data.shape[1])


def find(paths: list[str | Path]) -> list[Path]:
    """Files as given, and the audio files (by extension) under directories, sorted."""
    out = []
    for p in map(Path, paths):
        if p.is_dir():
            out.extend(sorted(f for f in p.rglob("*") if f.suffix.lower() in EXTENSIONS))
        else:
            out.append(p)
    return out
