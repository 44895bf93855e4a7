"""eSpeak NG speech synthesis: speakers (accent x voice variant) and 16 kHz int16 waveforms.

Two backends, tried in this order:
  * `espeakng-loader` (pip wheel shipping libespeak-ng and its voices), driven through ctypes in
    synchronous mode: fast (hundreds of short utterances per second per core) and hermetic;
  * the Debian `espeak-ng` binary (`apt-get install espeak-ng`) through `--stdout`.
Both produce 22,050 Hz audio, resampled here to 16 kHz with a polyphase filter (320/441).
A speaker is an English accent (an eSpeak language voice) combined with a voice variant.
"""

from __future__ import annotations

import ctypes
import dataclasses
import functools
import io
import shutil
import subprocess
from pathlib import Path

import numpy as np

ESPEAK_SAMPLE_RATE = 22_050
TARGET_SAMPLE_RATE = 16_000
ACCENTS = (
    "en-us",
    "en",
    "en-gb-x-rp",
    "en-gb-scotland",
    "en-gb-x-gbclan",
    "en-gb-x-gbcwmd",
    "en-029",
    "en-us-nyc",
)
# eSpeak NG C API constants (speak_lib.h).
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_DONT_EXIT = 0x8000
_PARAM_RATE, _PARAM_PITCH = 1, 3
_POS_CHARACTER = 1


class TTSUnavailableError(RuntimeError):
    """Neither eSpeak NG backend could be loaded."""


@dataclasses.dataclass(frozen=True)
class Speaker:
    """One synthetic speaker: an accent voice and a variant (`en-us+f3`)."""

    speaker_id: int
    accent: str
    variant: str

    @property
    def voice(self) -> str:
        return f"{self.accent}+{self.variant}"


class _LibraryBackend:
    """libespeak-ng from the `espeakng-loader` wheel, in synchronous mode."""

    def __init__(self):
        import espeakng_loader

        self.data_path = Path(espeakng_loader.get_data_path())
        self._lib = ctypes.CDLL(espeakng_loader.get_library_path())
        self._lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p,
                                                ctypes.c_int]
        self._lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        self._lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint,
                                           ctypes.c_int, ctypes.c_uint, ctypes.c_uint,
                                           ctypes.c_void_p, ctypes.c_void_p]
        rate = self._lib.espeak_Initialize(
            _AUDIO_OUTPUT_SYNCHRONOUS, 0, str(self.data_path).encode(), _INITIALIZE_DONT_EXIT)
        if rate != ESPEAK_SAMPLE_RATE:
            raise TTSUnavailableError(f"libespeak-ng initialization returned {rate}")
        self._chunks: list[np.ndarray] = []
        callback_type = ctypes.CFUNCTYPE(
            ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)
        self._callback = callback_type(self._collect)  # keep a reference: C holds the pointer
        self._lib.espeak_SetSynthCallback(self._callback)
        # eSpeak draws noise (breath, aspiration) from its own generator and from libc rand().
        self._lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
        self._libc = ctypes.CDLL(None)

    def _collect(self, wav, num_samples, _events) -> int:
        if num_samples > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(num_samples,)).copy())
        return 0

    def variants(self) -> list[str]:
        return sorted(p.name for p in (self.data_path / "voices" / "!v").iterdir())

    def synthesize(self, text: str, voice: str, rate_wpm: int, pitch: int,
                   seed: int) -> np.ndarray:
        self._lib.espeak_ng_SetRandSeed(seed)
        self._libc.srand(seed)
        if self._lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise ValueError(f"eSpeak NG has no voice {voice!r}")
        self._lib.espeak_SetParameter(_PARAM_RATE, rate_wpm, 0)
        self._lib.espeak_SetParameter(_PARAM_PITCH, pitch, 0)
        self._chunks = []
        data = text.encode()
        status = self._lib.espeak_Synth(data, len(data) + 1, 0, _POS_CHARACTER, 0, 0, None, None)
        if status != 0:
            raise RuntimeError(f"espeak_Synth failed with status {status} for {text!r}")
        return np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)


class _CommandBackend:
    """The Debian `espeak-ng` binary."""

    def __init__(self, binary: str):
        self._binary = binary
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=True)
        self.version = out.stdout.strip()

    def variants(self) -> list[str]:
        out = subprocess.run([self._binary, "--voices=variant"], capture_output=True, text=True,
                             check=True).stdout.splitlines()[1:]
        return sorted(line.split()[4].removeprefix("!v/") for line in out if line.split())

    def synthesize(self, text: str, voice: str, rate_wpm: int, pitch: int,
                   seed: int) -> np.ndarray:
        del seed  # the binary seeds itself
        wav = subprocess.run(
            [self._binary, "--stdout", "-v", voice, "-s", str(rate_wpm), "-p", str(pitch), text],
            capture_output=True, check=True).stdout
        import scipy.io.wavfile  # here: scipy.signal and .io cost 1 s of every run's start

        rate, samples = scipy.io.wavfile.read(io.BytesIO(wav))
        if rate != ESPEAK_SAMPLE_RATE:
            raise RuntimeError(f"espeak-ng wrote {rate} Hz, expected {ESPEAK_SAMPLE_RATE}")
        return samples.astype(np.int16)


@functools.cache
def load_backend() -> _LibraryBackend | _CommandBackend:
    """The process-wide eSpeak NG backend (the C library keeps global state and one callback)."""
    try:
        return _LibraryBackend()
    except (ImportError, OSError) as lib_error:
        binary = shutil.which("espeak-ng")
        if binary is None:
            raise TTSUnavailableError(
                "eSpeak NG is not available: install the wheel (`pip install espeakng-loader`, "
                "part of this package's requirements) or the Debian binary (`apt-get install "
                f"espeak-ng`). Loading the wheel failed with: {lib_error}") from lib_error
        return _CommandBackend(binary)


class Synthesizer:
    """Text to 16 kHz int16 speech with eSpeak NG, on the process-wide backend."""

    def __init__(self):
        self.backend_name = type(load_backend()).__doc__.split("\n")[0]

    def variants(self) -> list[str]:
        """Names of the installed voice variants, sorted."""
        return load_backend().variants()

    def synthesize(self, text: str, speaker: Speaker, *, rate_wpm: int, pitch: int,
                   seed: int = 0) -> np.ndarray:
        """Returns speech `[S]` int16 at 16 kHz for `text` spoken by `speaker`.

        eSpeak NG keeps state between utterances (its noise generators, echo buffer and pitch
        flutter run on), so the output depends on what the process synthesized before: a
        reproducible corpus renders a fixed sequence of utterances in a fresh process (see
        `recipe.render_chunk`). `seed` seeds eSpeak's noise for this utterance.
        """
        backend = load_backend()
        raw = backend.synthesize(text, speaker.voice, rate_wpm, pitch, seed).astype(np.float64)
        import scipy.signal

        audio = scipy.signal.resample_poly(raw, TARGET_SAMPLE_RATE // 50, ESPEAK_SAMPLE_RATE // 50)
        return np.clip(np.round(audio), -32768, 32767).astype(np.int16)


def all_speakers(variants: list[str]) -> list[Speaker]:
    """Every accent x variant pair, with ids `1000 * accent_index + variant_index`."""
    return [Speaker(1000 * a + v, accent, variant)
            for a, accent in enumerate(ACCENTS) for v, variant in enumerate(variants)]
