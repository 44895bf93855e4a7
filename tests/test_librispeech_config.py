"""The LibriSpeech config end to end on a small fake dataset with LibriSpeech's feature spec
(int64 `speech`, `text`, `speaker_id`, `chapter_id`, `id`; splits train_clean100, dev_clean,
test_clean), wordpieces from `experiments.build_tokenizer`."""

import json
import subprocess
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds

from amnet import build
from amnet.data import input_pipeline
from experiments.configs import librispeech
from tests.helpers import HANG_GUARD_S, ROOT, cpu_env, tiny_name

SPLITS = {"train_clean100": ("train", 24), "dev_clean": ("validation", 4),
          "test_clean": ("test", 4)}


class FakeLibrispeech(tfds.core.GeneratorBasedBuilder):
    """LibriSpeech's features, filled with utterances of the tiny spoken-commands corpus."""

    VERSION = tfds.core.Version("2.1.2")

    def __init__(self, *, source_dir, **kwargs):
        self._source_dir = source_dir
        super().__init__(file_format="array_record", **kwargs)

    def _info(self):
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
            "speech": tfds.features.Tensor(shape=(None,), dtype=np.int64),
            "text": tfds.features.Text(),
            "speaker_id": np.int64,
            "chapter_id": np.int64,
            "id": tfds.features.Text(),
        }), metadata=tfds.core.MetadataDict(sample_rate=16_000))

    def _split_generators(self, dl_manager):
        return {name: self._generate_examples(*spec) for name, spec in SPLITS.items()}

    def _generate_examples(self, split, count):
        source = input_pipeline.open_source(tiny_name(0), split, self._source_dir)
        for i in range(min(count, len(source))):
            example = source[i]
            yield f"{split}-{i}", {"speech": np.asarray(example["speech"], np.int64),
                                   "text": example["text"], "speaker_id": example["speaker_id"],
                                   "chapter_id": i, "id": f"{split}-{i}"}


@pytest.mark.slow
def test_wordpiece_librispeech_config_trains_on_a_fake_librispeech(tiny_data_dir, tmp_path):
    FakeLibrispeech(source_dir=str(tiny_data_dir), data_dir=str(tmp_path)).download_and_prepare()
    tokenizer = tmp_path / "wpm"
    out = subprocess.run(
        [sys.executable, "-m", "experiments.build_tokenizer", "--dataset=fake_librispeech",
         f"--data_dir={tmp_path}", "--vocab_size=48", f"--out={tokenizer}"],
        cwd=ROOT, env=cpu_env(), text=True, capture_output=True, timeout=HANG_GUARD_S)
    assert out.returncode == 0, out.stderr[-3000:]
    config = librispeech.get_config("full")
    assert (config.model.encoder_layers, config.model.encoder_hidden,
            config.model.encoder_projection, config.data.vocab_size) == (5, 1024, 640, 4096)
    out = subprocess.run(
        [sys.executable, "-m", "experiments.train",
         f"--config={ROOT}/experiments/configs/librispeech.py:tiny", f"--workdir={tmp_path}/run",
         f"--config.data.data_dir={tmp_path}", f"--config.data.tokenizer={tokenizer}.model",
         "--config.eval.test_decoders=greedy"],
        cwd=ROOT, env=cpu_env(), text=True, capture_output=True, timeout=HANG_GUARD_S)
    assert out.returncode == 0, out.stderr[-3000:]
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["step"] == 6 and 0 <= results["test_wer_greedy"]
    stored = json.loads((tmp_path / "run" / "config.json").read_text())
    assert stored["data"]["train_split"] == "train_clean100" and \
        stored["data"]["tokenizer"].endswith("wpm.model")
    # Without a tokenizer, or with one of another size, the config names what is wrong.
    with pytest.raises(ValueError, match="config.data.tokenizer is unset"):
        build.tokenizer(librispeech.get_config("tiny"))
    wrong = librispeech.get_config("tiny")
    wrong.data.tokenizer = f"{tokenizer}.model"
    wrong.data.vocab_size = 64
    with pytest.raises(ValueError, match="has 48 pieces, the config expects data.vocab_size=64"):
        build.tokenizer(wrong)
