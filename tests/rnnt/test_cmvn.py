"""Global CMVN: statistics of a split, stored with the run and restored identically, applied
per channel; SpecAugment fills its masks with the normalized mean."""

import dataclasses
import json

import jax
import numpy as np
import pytest

from amnet import build
from amnet.data import input_pipeline
from amnet.rnnt import cmvn, frontend
from experiments.configs import baseline
from tests.helpers import tiny_name


def _source(count=5, seed=0):
    rng = np.random.default_rng(seed)
    return [{"speech": (rng.normal(size=rng.integers(3000, 9000)) * (500 + 300 * i)
                        ).astype(np.int16)} for i in range(count)]


def test_statistics_are_those_of_the_raw_log_mels_and_normalize_every_channel():
    source = _source()
    config = frontend.FrontendConfig(num_mels=16)
    stats = cmvn.compute(source, config, utterances=10, seed=0)
    rows = []
    for example in source:
        speech = np.asarray(example["speech"])[None]
        features, lengths = frontend.log_mel(speech, np.array([speech.size]), config)
        rows.append(np.asarray(features)[0, : int(lengths[0])])
    rows = np.concatenate(rows).astype(np.float64)
    assert stats.frames == len(rows) and stats.utterances == len(source)
    np.testing.assert_allclose(stats.mean, rows.mean(axis=0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(stats.std, rows.std(axis=0), rtol=1e-4)
    normalized_config = dataclasses.replace(config, feature_mean=stats.mean,
                                            feature_std=stats.std)
    normalized = []
    for example in source:
        speech = np.asarray(example["speech"])[None]
        features, lengths = frontend.log_mel(speech, np.array([speech.size]), normalized_config)
        normalized.append(np.asarray(features)[0, : int(lengths[0])])
    normalized = np.concatenate(normalized)
    np.testing.assert_allclose(normalized.mean(axis=0), 0.0, atol=1e-4)
    np.testing.assert_allclose(normalized.std(axis=0), 1.0, atol=1e-3)
    # A subset is drawn by the seed: the same seed, the same statistics.
    assert cmvn.compute(source, config, utterances=3, seed=1) == \
        cmvn.compute(source, config, utterances=3, seed=1)
    with pytest.raises(ValueError, match="3 values for 16 mel channels"):
        frontend.FrontendConfig(num_mels=16, feature_mean=(0.0, 1.0, 2.0))


def test_spec_augment_fills_masks_with_the_normalized_mean():
    rng = np.random.default_rng(3)
    raw = rng.normal(loc=np.linspace(-8, 4, 20), scale=np.linspace(1, 5, 20),
                     size=(2, 300, 20)).astype(np.float32)
    mean, std = raw.reshape(-1, 20).mean(axis=0), raw.reshape(-1, 20).std(axis=0)
    normalized = (raw - mean) / std
    masked = np.asarray(frontend.spec_augment(
        jax.random.key(0), normalized, np.array([300, 300]),
        frontend.SpecAugmentConfig(num_freq_masks=2, max_freq_width=6, num_time_masks=2,
                                   max_time_ratio=0.1)))
    filled = masked != normalized
    assert filled.any()
    # The fill value is what each channel's mean is after normalization.
    np.testing.assert_allclose(normalized.reshape(-1, 20).mean(axis=0), 0.0, atol=1e-5)
    assert np.all(masked[filled] == 0.0)


def test_statistics_are_stored_with_the_run_and_restored_identically(tiny_data_dir, tmp_path):
    config = baseline.get_config("tiny")
    config.data.update(name=tiny_name(0), data_dir=str(tiny_data_dir))
    source_fn = lambda: input_pipeline.open_source(config.data.name, "train",  # noqa: E731
                                                   config.data.data_dir)
    resolved = cmvn.resolve(config, source_fn)
    assert len(resolved.frontend.cmvn_mean) == config.frontend.num_mels
    with pytest.raises(ValueError, match="holds no CMVN statistics"):
        build.frontend_configs(config)
    stored = tmp_path / "config.json"
    stored.write_text(resolved.to_json(indent=2))
    never = lambda: pytest.fail("statistics recomputed instead of restored")  # noqa: E731
    restored = cmvn.resolve(config, never, stored=stored)
    assert build.frontend_configs(restored) == build.frontend_configs(resolved)
    assert json.loads(restored.frontend.to_json()) == json.loads(resolved.frontend.to_json())
    # A run started from another (AmNet from a dense run) takes that run's statistics.
    config.init = {"dense_run": str(tmp_path)}
    assert cmvn.resolve(config, never).frontend.cmvn_std == resolved.frontend.cmvn_std
