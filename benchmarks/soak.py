r"""Soak test of the device runtime: an hour of speech through one recognizer.

    python -m benchmarks.soak --model=device.safetensors --data_dir=data [--minutes=60]

The audio: the `small_g0` test utterances, over and over, each followed by 0.5-1.5 s of quiet
noise, fed in 100 ms chunks to `Recognizer.segments` (greedy, default endpoint rules). Reports:
segments, real-time factor, resident memory (RSS) at 10% and at the end, median time per frame
in the first and last 10% of the segments, and how many segments decode to the same tokens when
their audio is decoded alone. `tests/device/test_device.py` runs a 2-minute version.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np

from amnet.device.recognizer import Recognizer


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _speech(data_dir: str | None, name: str):
    from amnet.data import input_pipeline

    source = input_pipeline.open_source(name, "test", data_dir)
    return [np.asarray(source[i]["speech"]) for i in range(len(source))]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True)
    p.add_argument("--data_dir")
    p.add_argument("--corpus", default="spoken_commands/small_g0")
    p.add_argument("--minutes", type=float, default=60.0)
    args = p.parse_args()
    recognizer = Recognizer.load(args.model)
    utterances = _speech(args.data_dir, args.corpus)
    rng = np.random.default_rng(0)
    total = int(args.minutes * 60 * recognizer.sample_rate)
    parts, length = [], 0
    while length < total:
        speech = utterances[len(parts) // 2 % len(utterances)]
        quiet = rng.normal(0, 30, int(rng.uniform(0.5, 1.5) * recognizer.sample_rate))
        parts += [speech, quiet.astype(np.int16)]
        length += speech.size + quiet.size
    audio = np.concatenate(parts)[:total]
    del parts
    chunk = recognizer.sample_rate // 10
    segments, per_frame, rss = [], [], []
    start = begin = time.perf_counter()
    for segment in recognizer.segments(audio[i:i + chunk] for i in range(0, audio.size, chunk)):
        now = time.perf_counter()
        per_frame.append((now - start) / max(segment.result.frames, 1))
        segments.append(segment)
        rss.append(_rss_mib())
        start = now
    compute = time.perf_counter() - begin
    same = sum(recognizer.transcribe(audio[s.start:s.end]).tokens == s.result.tokens
               for s in segments)
    tenth = max(len(segments) // 10, 1)
    print(f"{audio.size / recognizer.sample_rate / 60:.1f} minutes of audio, "
          f"{len(segments)} segments ({sum(bool(s.result.text) for s in segments)} with text), "
          f"RTF {compute / (audio.size / recognizer.sample_rate):.4f}")
    print(f"RSS {rss[tenth - 1]:.1f} MiB after 10% of the segments, {rss[-1]:.1f} MiB at the "
          f"end (max {max(rss):.1f})")
    print(f"median ms per frame: first 10% {1e3 * statistics.median(per_frame[:tenth]):.3f}, "
          f"last 10% {1e3 * statistics.median(per_frame[-tenth:]):.3f}")
    print(f"segments identical to their audio decoded alone: {same} / {len(segments)}")


if __name__ == "__main__":
    main()
