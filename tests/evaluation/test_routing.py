"""Where the cheap frames go: the energy-based silence label, routing probabilities at a
temperature, the matched-compute bracket."""

from pathlib import Path

import numpy as np
import pytest

from amnet.evaluation import routing
from amnet.studies import amnet_matched

RATE, FRAME = 16_000, 480  # 30 ms encoder frames


def _noisy_speech_like(seed: int, noise_std: float):
    """Tone bursts (speech) between noise-only stretches (silence), with the true labels."""
    rng = np.random.default_rng(seed)
    segments = [(False, 10), (True, 17), (False, 6), (True, 13), (False, 8)]  # frames
    audio, labels = [], []
    for speech, frames in segments:
        t = np.arange(frames * FRAME) / RATE
        tone = 0.5 * np.sin(2 * np.pi * 220 * t) * (1 + 0.3 * np.sin(2 * np.pi * 3 * t))
        audio.append(tone if speech else np.zeros_like(t))
        labels += [not speech] * frames
    audio = np.concatenate(audio)
    return audio + noise_std * rng.normal(size=audio.size), np.array(labels)


@pytest.mark.parametrize("noise_std", [0.0, 0.01, 0.1])  # clean, ~30 dB and ~10 dB SNR
def test_silence_frames_find_the_known_silences(noise_std):
    audio, truth = _noisy_speech_like(0, noise_std)
    labels = routing.silence_frames(audio, FRAME, truth.size)
    np.testing.assert_array_equal(labels, truth)
    # Audio shorter than the frames: the missing tail is silence; longer: ignored.
    assert routing.silence_frames(audio[: 20 * FRAME], FRAME, 25)[20:].all()
    np.testing.assert_array_equal(
        routing.silence_frames(audio, FRAME, 30), truth[:30])


def test_routing_probability_sharpens_with_temperature():
    logits = np.array([[0.0, 0.02], [0.0, 0.0], [3.0, -3.0]])
    at_one = routing.routing_probability(logits, 1.0)
    np.testing.assert_allclose(at_one, [1 / (1 + np.exp(-0.02)), 0.5, 1 / (1 + np.exp(-6))])
    cold = routing.routing_probability(logits, 0.005)
    assert cold[0] > 0.98 and cold[1] == 0.5 and cold[2] == pytest.approx(1.0)


def _points(*pairs):
    return [amnet_matched.Point(w, m, Path(f"run{w}")) for w, m in pairs]


def test_bracket_interpolates_between_the_enclosing_weights():
    points = _points((10.0, 1.5), (1.0, 3.5), (3.0, 2.5))
    found = amnet_matched.bracket(points, 2.0)
    assert (found.low.weight, found.high.weight) == (3.0, 10.0)
    assert found.weight == pytest.approx(np.sqrt(30.0))  # halfway in log λ
    assert amnet_matched.bracket(points, 2.5).weight == pytest.approx(3.0)
    assert amnet_matched.closest(points, 2.4).weight == 3.0
    with pytest.raises(ValueError, match=r"no two cost-only runs enclose 4\.000.*λ 1: 3\.500"):
        amnet_matched.bracket(points, 4.0)
    with pytest.raises(ValueError, match="two or more"):
        amnet_matched.bracket(points[:1], 2.0)
