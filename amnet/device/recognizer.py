"""The recognizer of a device model file: whole utterances or a live stream.

    recognizer = Recognizer.load("device.safetensors", beam=8, lm="lm.safetensors")
    result = recognizer.transcribe(audio_16khz)          # Result(text, tokens, ...)
    stream = recognizer.stream()
    for chunk in chunks: stream.accept(chunk); print(stream.partial)
    result = stream.finish()

Audio is 16-bit PCM or float samples in [-1, 1] at the model's sample rate, mono (`audio.py`
reads files, resamples and mixes down). A stream consumes each 30 ms encoder frame as soon as
its samples have arrived; `transcribe` is a stream fed the whole utterance at once, so both
give the same result.

Endless audio (a microphone): `segments(chunks)` cuts it at endpoints and starts every segment
from a fresh state, so memory and per-frame cost do not grow, and each segment's result is that
of its audio decoded alone. Endpoint rules (`Endpointing`, as sherpa-onnx's): after text,
`trailing_silence_after_text_s` without a new label; without text, `trailing_silence_s`; and
any segment at `max_segment_s`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np

from amnet.device import features, search
from amnet.device.network import Network
from amnet.device.spec import DeviceSpec
from amnet.rnnt import lm as lm_lib
from neuraldiff import model_file

# Labels per segment at most (the JAX decoders' bound is the run's eval.max_length, 160 for the
# small corpus; pass `spec.max_length` to reproduce them exactly). A result that reaches it is
# marked `truncated`.
MAX_LENGTH = 1024


@dataclasses.dataclass(frozen=True)
class Endpointing:
    trailing_silence_after_text_s: float = 0.8
    trailing_silence_s: float = 2.4
    max_segment_s: float = 20.0


@dataclasses.dataclass(frozen=True)
class Segment:
    result: Result
    start: int  # first sample, from the start of the audio
    end: int  # one past the last sample its frames used


@dataclasses.dataclass(frozen=True)
class Result:
    text: str
    tokens: list[int]
    frames: int  # encoder frames consumed
    branches: np.ndarray  # [frames] the encoder branch run on each frame
    token_frames: list[int] | None  # the frame each token was emitted at
    frame_period_s: float
    truncated: bool = False  # the hypothesis reached the label bound (max_length)

    def words(self) -> list[dict] | None:
        """Per-word start and end times in seconds: a word starts at the frame of its first
        character and ends after the frame of its last (beam search: the frames of the best
        hypothesis's alignment). None without one token per character (wordpieces)."""
        frames, text = self.token_frames, self.text
        if frames is None or len(frames) != len(text):
            return None
        out, start = [], None
        for i, ch in enumerate(text + " "):
            if ch != " " and start is None:
                start = i
            elif ch == " " and start is not None:
                out.append({"word": text[start:i],
                            "start_s": round(frames[start] * self.frame_period_s, 3),
                            "end_s": round((frames[i - 1] + 1) * self.frame_period_s, 3)})
                start = None
        return out


class Recognizer:
    """A model file's recognizer; `beam=1` is greedy search."""

    def __init__(self, spec: DeviceSpec, params: dict[str, np.ndarray] | None = None, *,
                 network=None, beam: int = 1, fusion: search.Fusion | None = None,
                 max_symbols_per_frame: int = 5, max_length: int = MAX_LENGTH,
                 int8: bool = False):
        """`params` of a model file, or a `network` with `Network`'s interface (an
        `onnx_model.OnnxNetwork`); `int8`: store the params' matrices as int8 with per-column
        scales (`kernels.Int8`)."""
        if beam < 1:
            raise ValueError(f"beam must be >= 1, got {beam}")
        if fusion is not None and beam == 1:
            raise ValueError("shallow fusion needs beam search (beam >= 2)")
        self.spec = spec
        if (params is None) == (network is None):
            raise ValueError("give the model's params or a network, not both")
        if network is not None and int8:
            raise ValueError("int8 applies to a model file's params, not to a given network")
        self.network = network if network is not None else Network(spec, params, int8)
        self.frontend = features.Frontend(spec.frontend)
        self.beam, self.fusion = beam, fusion
        self.max_symbols = max_symbols_per_frame
        self.max_length = max_length

    @classmethod
    def load(cls, path: str | Path, *, lm: str | Path | Sequence[str | Path] | None = None,
             lm_weights: Sequence[float] = (0.15,), length_bonus: float = 0.5,
             beam: int = 1, **kwargs) -> Recognizer:
        """The recognizer of a model file (checked: fingerprint, configuration); `lm`: automaton
        files (`amnet.rnnt.lm`) fused with `lm_weights` (needs beam >= 2)."""
        model = model_file.read(path)
        spec = DeviceSpec.from_metadata(model.metadata, str(path))
        fusion = None
        if lm:
            paths = [lm] if isinstance(lm, (str, Path)) else list(lm)
            automata = [lm_lib.load(p, vocab_size=spec.model["vocab_size"]) for p in paths]
            fusion = search.Fusion.of(automata, list(lm_weights)[:len(automata)], length_bonus)
        return cls(spec, model.params, beam=beam, fusion=fusion, **kwargs)

    @property
    def sample_rate(self) -> int:
        return self.frontend.sample_rate

    @property
    def frame_seconds(self) -> float:
        return self.frontend.samples_per_frame / self.frontend.sample_rate

    def stream(self, endpointing: Endpointing | None = None) -> Stream:
        return Stream(self, endpointing)

    def transcribe(self, audio: np.ndarray) -> Result:
        """audio `[S]` (int16 or float, the model's sample rate, mono) -> `Result`."""
        stream = self.stream()
        stream.accept(audio)
        return stream.finish()

    def segments(self, chunks: Iterable[np.ndarray],
                 endpointing: Endpointing = Endpointing(),
                 on_chunk: Callable[[Stream, int], None] | None = None) -> Iterator[Segment]:
        """Endless audio in chunks -> one `Segment` per endpoint (and one for the rest).

        The next segment starts at the first sample of the frame after the endpoint, with a
        new stream; the audio kept meanwhile is at most one segment (`max_segment_s`).
        `on_chunk(stream, start)` sees the current segment's stream (and its first sample)
        after every chunk: partial results.
        """
        step = self.frontend.samples_per_frame
        tail = self.frontend.win - self.frontend.hop  # a frame's window beyond its stride
        buffer, start = np.zeros(0, np.float32), 0
        stream = self.stream(endpointing)
        for chunk in chunks:
            buffer = np.concatenate([buffer, features.to_float(chunk).ravel()])
            stream.accept(chunk)
            if on_chunk is not None:
                on_chunk(stream, start)
            while stream.ended:
                cut = stream.frames * step
                yield Segment(stream.finish(), start, start + cut + tail)
                buffer, start = buffer[cut:], start + cut
                stream = self.stream(endpointing)
                stream.accept(buffer)
        if stream.frames:
            yield Segment(stream.finish(), start, start + stream.frames * step + tail)


class Stream:
    """One utterance arriving in chunks; with `endpointing`, it stops at an endpoint (`ended`)
    and ignores the frames after it."""

    def __init__(self, recognizer: Recognizer, endpointing: Endpointing | None = None):
        r = recognizer
        self.recognizer = r
        self.endpointing = endpointing
        self.ended = False
        self._label_frame = -1  # the last frame where the best hypothesis grew
        self.features = features.FeatureStream(r.frontend)
        self.encoder_state = r.network.encoder.initial_state()
        self.search = (search.Greedy(r.network, r.max_symbols, r.max_length) if r.beam == 1
                       else search.Beam(r.network, r.beam, r.max_symbols, r.max_length,
                                        r.fusion))
        self.branches: list[int] = []
        self.finished = False

    def accept(self, samples: np.ndarray) -> None:
        """Feeds samples; every encoder frame they complete is recognized now."""
        if self.finished:
            raise RuntimeError("the stream is finished")
        for frame in self.features.accept(samples):
            if self.ended:
                break
            self.accept_frame(frame)

    @property
    def frames(self) -> int:
        return len(self.branches)

    def accept_frame(self, frame: np.ndarray) -> None:
        """One stacked feature frame `[D]` (features computed elsewhere)."""
        network = self.recognizer.network
        enc_proj, self.encoder_state, branch = network.encode_step(
            np.asarray(frame, np.float32)[None], self.encoder_state)
        before = self.search.length()
        self.search.step(enc_proj, len(self.branches))
        self.branches.append(branch)
        if self.search.length() != before:
            self._label_frame = len(self.branches) - 1
        if self.endpointing is not None:
            rules, period = self.endpointing, self.recognizer.frame_seconds
            silence = (len(self.branches) - 1 - self._label_frame) * period
            self.ended = (len(self.branches) * period >= rules.max_segment_s
                          or silence >= (rules.trailing_silence_after_text_s
                                         if self._label_frame >= 0 else rules.trailing_silence_s))

    @property
    def partial(self) -> str:
        """The best hypothesis so far (beam: before end-of-sentence scores)."""
        return self.recognizer.spec.detokenize(self.search.best())

    def finish(self) -> Result:
        self.finished = True
        tokens = self.search.best()
        r = self.recognizer
        return Result(r.spec.detokenize(tokens), tokens, len(self.branches),
                      np.asarray(self.branches, np.int32), self.search.best_frames(),
                      r.frame_seconds,
                      len(tokens) >= r.max_length)
