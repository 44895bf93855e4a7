"""The embedded corpus: determinism, disjoint splits, feature spec, generations, TTS errors."""

import subprocess
import sys

import numpy as np
import pytest

from amnet.data.corpus import grammar, recipe, speech_synth, spoken_commands
from amnet.data.text import normalize_text
from tests.helpers import TINY_SEED

SPLITS = ("train", "validation", "test")


def _examples(data_dir, generation, split):
    builder = spoken_commands.make_builder("tiny", generation, data_dir=str(data_dir),
                                           seed=TINY_SEED)
    source = builder.as_data_source(split=split)
    examples = [source[i] for i in range(len(source))]
    return {e["id"].decode(): e for e in examples}


def test_feature_spec_matches_librispeech_names(tiny_data_dir):
    builder = spoken_commands.make_builder("tiny", 0, data_dir=str(tiny_data_dir), seed=TINY_SEED)
    assert {"speech", "text", "speaker_id", "id"} <= set(builder.info.features)
    assert builder.info.metadata["sample_rate"] == 16_000
    assert builder.info.file_format.value == "array_record"
    sizes = spoken_commands.SIZES["tiny"].base
    assert {s: builder.info.splits[s].num_examples for s in SPLITS} == {
        "train": sizes.train, "validation": sizes.validation, "test": sizes.test}
    for example in _examples(tiny_data_dir, 0, "test").values():
        speech = example["speech"]
        assert speech.dtype == np.int16 and 0.5 < speech.size / 16_000 < 8.0
        assert np.abs(speech.astype(np.float64)).mean() > 100  # not silence
        text = example["text"].decode()
        assert text and normalize_text(text) == text


def test_building_twice_gives_identical_examples(tmp_path, monkeypatch):
    """Same seed, two data dirs, one vs two synthesis processes: the same examples."""
    monkeypatch.setattr(recipe, "RENDER_CHUNK", 16)  # several chunks per split
    for workers in (1, 2):
        spoken_commands.make_builder("tiny", 0, data_dir=str(tmp_path / str(workers)),
                                     seed=TINY_SEED, num_workers=workers).download_and_prepare()
    for split in SPLITS:
        first, second = _examples(tmp_path / "1", 0, split), _examples(tmp_path / "2", 0, split)
        assert first.keys() == second.keys()
        for key, a in first.items():
            b = second[key]
            assert a["text"] == b["text"] and a["speaker_id"] == b["speaker_id"]
            np.testing.assert_array_equal(a["speech"], b["speech"])


def test_another_seed_gives_other_examples():
    speakers = recipe.speakers_by_split([f"v{i}" for i in range(30)], seed=1)
    plans = [recipe.plan_split(generation=0, split="train", num_fresh=5, num_replay=0,
                               speakers=speakers["train"], seed=seed) for seed in (1, 2)]
    assert [p.text for p in plans[0]] != [p.text for p in plans[1]]


def test_splits_have_disjoint_speakers_and_sentences(tiny_data_dir):
    data = {(g, s): _examples(tiny_data_dir, g, s) for g in (0, 1) for s in SPLITS}
    speakers = {s: {int(e["speaker_id"]) for g in (0, 1) for e in data[(g, s)].values()}
                for s in SPLITS}
    sentences = {s: {e["text"] for g in (0, 1) for e in data[(g, s)].values()} for s in SPLITS}
    for a, b in (("train", "validation"), ("train", "test"), ("validation", "test")):
        assert not speakers[a] & speakers[b], (a, b)
        assert not sentences[a] & sentences[b], (a, b)


def test_speaker_partition_is_by_variant_and_covers_every_accent():
    variants = speech_synth.Synthesizer().variants()
    by_split = recipe.speakers_by_split(variants, seed=TINY_SEED)
    assert sum(len(v) for v in by_split.values()) == len(variants) * len(speech_synth.ACCENTS)
    assert len(by_split["train"]) >= 40
    variant_sets = {s: {sp.variant for sp in v} for s, v in by_split.items()}
    assert not variant_sets["train"] & (variant_sets["test"] | variant_sets["validation"])
    for speakers in by_split.values():
        assert {sp.accent for sp in speakers} == set(speech_synth.ACCENTS)


def test_update_generation_replays_earlier_data():
    """g1 training data: 70 sentences new in g1, then 30 replayed from g0."""
    speakers = recipe.speakers_by_split([f"v{i}" for i in range(30)], seed=3)["train"]
    plans = recipe.plan_split(generation=1, split="train", num_fresh=70, num_replay=30,
                              speakers=speakers, seed=3)
    new_values = {v for values in grammar.SLOT_VALUES[1].values() for v in values}
    base_intents = {i.name for i in grammar.INTENTS if i.generation == 0}
    for plan in plans[:70]:
        padded = " " + plan.text.replace("'s ", " ") + " "
        assert plan.intent == "olympics" or any(f" {v} " in padded for v in new_values), plan
    assert all(plan.intent in base_intents for plan in plans[70:])


def test_generation_vocabulary_in_the_built_corpus(tiny_data_dir):
    g0_words = {w for s in SPLITS for e in _examples(tiny_data_dir, 0, s).values()
                for w in e["text"].decode().split()}
    g1_test_words = {w for e in _examples(tiny_data_dir, 1, "test").values()
                     for w in e["text"].decode().split()}
    assert g1_test_words - g0_words  # the update brings words the base corpus never had


def test_readable_with_grain_without_tensorflow(tiny_data_dir):
    code = f"""
import sys
from amnet.data import input_pipeline
from amnet.data.text import CharTokenizer
config = input_pipeline.PipelineConfig(global_batch_size=4, num_epochs=1)
source = input_pipeline.open_source("spoken_commands/tiny_g0_s{TINY_SEED}", "train",
                                    {str(tiny_data_dir)!r})
report = input_pipeline.scan(source, CharTokenizer(), config)
batches = list(input_pipeline.make_dataset(source, CharTokenizer(), report, config))
print(sum(int(b["weights"].sum()) for b in batches), "tensorflow" in sys.modules)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == [str(spoken_commands.SIZES["tiny"].base.train), "False"]


def test_missing_tts_gives_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "espeakng_loader", None)  # import fails
    monkeypatch.setattr(speech_synth.shutil, "which", lambda name: None)
    speech_synth.load_backend.cache_clear()
    try:
        with pytest.raises(speech_synth.TTSUnavailableError,
                           match=r"pip install espeakng-loader.*apt-get install espeak-ng"):
            speech_synth.Synthesizer()
    finally:
        speech_synth.load_backend.cache_clear()


def test_unknown_voice_is_named():
    synth = speech_synth.Synthesizer()
    with pytest.raises(ValueError, match="no-such-accent"):
        synth.synthesize("hello", speech_synth.Speaker(0, "no-such-accent", "m1"), rate_wpm=170,
                         pitch=50)


def test_unknown_size_or_generation_is_rejected():
    with pytest.raises(ValueError, match="huge"):
        spoken_commands.make_config("huge", 0)
    with pytest.raises(ValueError, match="generation"):
        spoken_commands.make_config("tiny", 6)
