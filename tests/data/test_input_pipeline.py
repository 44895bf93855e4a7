"""Input pipeline: bucketing shapes, epochs, process sharding, iterator state, bad inputs."""

import numpy as np
import pytest
import tensorflow_datasets as tfds

from amnet.data import input_pipeline as ip
from amnet.data.text import CharTokenizer
from tests.helpers import tiny_name

TOKENIZER = CharTokenizer()
BUCKETS = ((8_000, 20), (16_000, 40), (32_000, 60))


def _source(n=37, seed=0):
    rng = np.random.default_rng(seed)
    words = ["call", "mom", "set", "a", "timer", "for", "five", "minutes", "play", "jazz"]
    return [{"id": f"ex-{i}".encode(),
             "speech": rng.integers(-1000, 1000, int(rng.integers(1_000, 32_000))).astype(np.int16),
             "text": " ".join(rng.choice(words, int(rng.integers(1, 6)))).encode(),
             "speaker_id": i % 5} for i in range(n)]


def _config(**kwargs):
    return ip.PipelineConfig(**{"buckets": BUCKETS, "global_batch_size": 4, "num_epochs": 1,
                                "num_threads": 1, **kwargs})


def _batches(source, config, **kwargs):
    report = ip.scan(source, TOKENIZER, config)
    return list(ip.make_dataset(source, TOKENIZER, report, config, **kwargs))


def test_batches_have_bucket_shapes_and_every_example_once():
    source = _source()
    batches = _batches(source, _config())
    shapes = {(b["audio"].shape, b["tokens"].shape) for b in batches}
    assert shapes <= {((4, s), (4, u)) for s, u in BUCKETS}
    ids = [i for b in batches for i, w in zip(b["ids"], b["weights"], strict=True) if w]
    assert sorted(ids) == sorted(e["id"].decode() for e in source)
    for batch in batches:
        for row in range(4):
            n, u = batch["audio_lengths"][row], batch["token_lengths"][row]
            assert not batch["audio"][row, n:].any() and not batch["tokens"][row, u:].any()
            if batch["weights"][row] == 0:
                assert n == 0 and u == 0
            else:
                example = source[int(batch["ids"][row].split("-")[1])]
                np.testing.assert_array_equal(batch["audio"][row, :n], example["speech"])
                assert TOKENIZER.decode(batch["tokens"][row, :u]) == example["text"].decode()
    # Each example sits in the smallest bucket it fits.
    for batch in batches:
        bucket = [s for s, _ in BUCKETS].index(batch["audio"].shape[1])
        if bucket:
            assert batch["audio_lengths"].max() > BUCKETS[bucket - 1][0] or \
                batch["token_lengths"].max() > BUCKETS[bucket - 1][1]


def test_order_is_deterministic_and_changes_per_epoch():
    source = _source()
    first = [tuple(b["ids"]) for b in _batches(source, _config(num_epochs=2))]
    again = [tuple(b["ids"]) for b in _batches(source, _config(num_epochs=2))]
    assert first == again
    half = len(first) // 2
    assert first[:half] != first[half:]  # the second epoch is shuffled differently
    epochs = [sorted(i for b in part for i in b if i) for part in (first[:half], first[half:])]
    assert epochs[0] == epochs[1] and len(epochs[0]) == len(source)


def test_process_shards_reassemble_the_global_batch():
    source, config = _source(), _config()
    whole = _batches(source, config)
    parts = [_batches(source, config, process_index=p, process_count=2) for p in range(2)]
    for full, first, second in zip(whole, *parts, strict=True):
        for key in full:
            np.testing.assert_array_equal(full[key], np.concatenate([first[key], second[key]]))
    with pytest.raises(ip.DataError, match="not divisible by the process count 3"):
        _batches(source, config, process_index=0, process_count=3)


def test_iterator_state_restores_the_exact_position():
    source = _source()
    config = _config(num_epochs=None, num_threads=2)
    report = ip.scan(source, TOKENIZER, config)
    iterator = iter(ip.make_dataset(source, TOKENIZER, report, config))
    for _ in range(7):
        next(iterator)
    state = iterator.get_state()
    expected = [next(iterator)["ids"] for _ in range(5)]
    resumed = iter(ip.make_dataset(source, TOKENIZER, report, config))
    resumed.set_state(state)
    np.testing.assert_array_equal([next(resumed)["ids"] for _ in range(5)], expected)


@pytest.mark.parametrize("field, value, message", [
    ("text", b"call mom at 5", r"ex-3.*'5'"),
    ("text", b" ", r"ex-3.*empty transcript"),
    ("speech", np.zeros(0, np.int16), r"ex-3.*zero-length audio"),
    ("speech", np.zeros(100, np.float32), r"ex-3.*int16"),
    ("speech", np.full(100, 70_000, np.int64), r"ex-3.*int16 range"),
    ("speech", np.zeros(40_000, np.int16), r"ex-3.*exceed the largest bucket"),
])
def test_bad_examples_are_named_or_counted(field, value, message):
    source = _source(10)
    source[3] = {**source[3], field: value}
    with pytest.raises(ip.DataError, match=message):
        ip.scan(source, TOKENIZER, _config())
    report = ip.scan(source, TOKENIZER, _config(bad_example_policy="skip", max_bad_share=0.1))
    assert report.num_bad == 1 and report.total == 10 and 3 not in report.indices
    assert [ids for ids in report.bad.values()] == [["ex-3"]]


class _CorruptSource(list):
    """A source whose record 4 cannot be decoded (like a damaged array_record chunk)."""

    def __getitem__(self, i):
        if i == 4:
            raise OSError("checksum mismatch in record block")
        return super().__getitem__(i)


def test_undecodable_records_are_named_or_counted_and_too_many_stop_the_run():
    source = _CorruptSource(_source(10))
    with pytest.raises(ip.DataError, match=r"record #4.*cannot be read: OSError"):
        ip.scan(source, TOKENIZER, _config())
    report = ip.scan(source, TOKENIZER, _config(bad_example_policy="skip", max_bad_share=0.1))
    assert report.bad == {"undecodable": ["record #4"]} and 4 not in report.indices
    # Two bad of ten is more than a 10% share: the run stops and names them.
    source[7] = {**source[7], "text": b" "}
    with pytest.raises(ip.DataError, match=r"2 of 10 examples are bad.*record #4.*ex-7"):
        ip.scan(source, TOKENIZER, _config(bad_example_policy="skip", max_bad_share=0.1))


def test_int64_pcm_in_range_is_accepted():
    """TFDS librispeech decodes audio as int64; values in the int16 range are fine."""
    source = _source(6)
    source[0] = {**source[0], "speech": source[0]["speech"].astype(np.int64)}
    batches = _batches(source, _config())
    assert all(b["audio"].dtype == np.int16 for b in batches)


def test_missing_dataset_names_the_data_dir(tmp_path):
    with pytest.raises(ip.DataError, match=f"not prepared under data dir.*{tmp_path}"):
        ip.open_source("spoken_commands/tiny_g0", "train", tmp_path)


def test_missing_split_is_named(tiny_data_dir):
    with pytest.raises(ip.DataError, match="no split 'dev'"):
        ip.open_source(tiny_name(0), "dev", tiny_data_dir)


class NarrowbandToy(tfds.core.GeneratorBasedBuilder):
    """An 8 kHz dataset, to check the sample-rate guard."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self, metadata=tfds.core.MetadataDict(sample_rate=8_000),
            features=tfds.features.FeaturesDict({
                "speech": tfds.features.Tensor(shape=(None,), dtype=np.int16),
                "text": tfds.features.Text(), "id": tfds.features.Text()}))

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples()}

    def _generate_examples(self):
        yield "a", {"speech": np.ones(800, np.int16), "text": "hello", "id": "a"}


def test_wrong_sample_rate_is_refused(tmp_path):
    NarrowbandToy(data_dir=str(tmp_path), file_format="array_record").download_and_prepare()
    with pytest.raises(ip.DataError, match="8000 Hz.*16000 Hz"):
        ip.open_source("narrowband_toy", "train", tmp_path)


def test_real_corpus_epoch(tiny_data_dir):
    source = ip.open_source(tiny_name(0), "validation", tiny_data_dir)
    config = ip.PipelineConfig(global_batch_size=4, num_epochs=1)
    batches = _batches(source, config)
    assert sum(int(b["weights"].sum()) for b in batches) == len(source)
    assert {b["audio"].shape[1] for b in batches} <= {s for s, _ in config.buckets}


def test_config_validation():
    with pytest.raises(ValueError, match="bad_example_policy"):
        ip.PipelineConfig(bad_example_policy="ignore")
    with pytest.raises(ValueError, match="ascending"):
        ip.PipelineConfig(buckets=((2, 2), (1, 1)))


def test_speed_perturbation_adds_one_resampled_copy_per_factor():
    from amnet.data import speed_perturbation
    source = _source(12)
    tone = np.sin(np.arange(16_000) * 2 * np.pi * 400 / 16_000)
    source[0] = {**source[0], "speech": (tone * 8_000).astype(np.int16)}
    config = _config(speed_factors=(0.9, 1.0, 1.1))
    batches = _batches(source, config)
    rows = {i: (b["audio"][r, : b["audio_lengths"][r]], b["tokens"][r, : b["token_lengths"][r]])
            for b in batches for r, i in enumerate(b["ids"]) if b["weights"][r]}
    assert sorted(rows) == sorted(ip.copy_id(e["id"].decode(), f)
                                  for e in source for f in (0.9, 1.0, 1.1))
    for e in source:
        for f in (0.9, 1.0, 1.1):
            audio, tokens = rows[ip.copy_id(e["id"].decode(), f)]
            assert audio.size == speed_perturbation.perturbed_length(e["speech"].size, f)
            assert TOKENIZER.decode(tokens) == e["text"].decode()
        np.testing.assert_array_equal(rows[e["id"].decode()][0], e["speech"])
    # Replayed at speed f, a 400 Hz tone lasts 1/f as long and sounds at 400 f Hz.
    for f in (0.9, 1.1):
        audio = rows[ip.copy_id("ex-0", f)][0].astype(np.float64)
        assert abs(audio.size - 16_000 / f) < 1
        peak = np.abs(np.fft.rfft(audio)).argmax() * 16_000 / audio.size
        assert abs(peak - 400 * f) < 2, (f, peak)
    # A copy bucketed by its own length: a slowed copy can need the next bucket.
    report = ip.scan(source, TOKENIZER, config)
    for position, (index, factor) in enumerate(zip(report.indices, report.factors, strict=True)):
        n = speed_perturbation.perturbed_length(source[index]["speech"].size, factor)
        assert n <= BUCKETS[report.buckets[position]][0]


def test_a_slowed_copy_too_long_for_the_largest_bucket_is_named():
    source = _source(10)
    source[3] = {**source[3], "speech": np.zeros(30_000, np.int16)}  # 33,334 samples at 0.9
    with pytest.raises(ip.DataError, match=r"'ex-3@sp0.9'.*33334 samples"):
        ip.scan(source, TOKENIZER, _config(speed_factors=(0.9, 1.0)))
    report = ip.scan(source, TOKENIZER, _config(speed_factors=(0.9, 1.0), max_bad_share=0.1,
                                                bad_example_policy="skip"))
    assert report.bad == {"too long": ["ex-3@sp0.9"]} and report.total == 20
    with pytest.raises(ValueError, match="speed factor must be in"):
        _config(speed_factors=(0.3,))
    with pytest.raises(ValueError, match="round to the same resampling ratios"):
        _config(speed_factors=(1.0, 1.004))
