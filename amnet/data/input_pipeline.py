"""Input pipeline: TFDS data source -> validated, length-bucketed, padded batches with grain.

    source = open_source("spoken_commands/small_g0", "train", data_dir)
    index = scan(source, tokenizer, config)            # validates every example once
    it = iter(make_dataset(source, tokenizer, index, config))
    batch = next(it)                                   # dict of numpy arrays, see `load_batch`
    state = it.get_state(); ...; it.set_state(state)   # checkpointable iterator

Batching: every example goes to the smallest bucket (max samples, max tokens) it fits in. Each
epoch, examples are shuffled within their bucket, cut into global batches, and the batch order
is shuffled, all from `(seed, epoch)`. A bucket's last partial batch is padded with rows of
weight 0, so every example is used once per epoch and the jitted step only ever sees
`len(buckets)` shapes. Multi-host: process p of P loads rows [p * B/P, (p + 1) * B/P) of each
global batch of B rows.

Speed perturbation (`speed_factors`, training only): every example is used once per factor and
epoch, replayed at that speed (`amnet.data.speed_perturbation`) and bucketed by its perturbed
length; a copy's id carries its factor (`<id>@sp0.9`).

Bad examples (empty or unknown-character transcripts, empty audio, audio that is not int16,
examples too long for the largest bucket) are found by `scan`: policy `error` stops with a
message naming them, policy `skip` leaves them out, counted and logged with their ids.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grain
import numpy as np
import tensorflow_datasets as tfds
from absl import logging
from etils import epath

from amnet.data import speed_perturbation
from amnet.data.text import Tokenizer, TranscriptError


class DataError(ValueError):
    """A dataset that cannot be used as asked: missing, wrong sample rate, bad examples."""


class BadExample(DataError):
    """One unusable example; `reason` is a short category used in the skip report."""

    def __init__(self, reason: str, example_id: str, detail: str):
        super().__init__(f"example {example_id!r}: {detail}")
        self.reason = reason
        self.example_id = example_id
        self.detail = detail


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    # (max audio samples, max tokens) per bucket, ascending.
    buckets: tuple[tuple[int, int], ...] = ((48_000, 64), (80_000, 96), (160_000, 160))
    global_batch_size: int = 32
    seed: int = 0
    shuffle: bool = True
    num_epochs: int | None = None  # None: repeat forever
    bad_example_policy: str = "error"  # "error" | "skip"
    max_bad_share: float = 0.05  # with "skip": a larger share of bad examples is an error
    sample_rate: int = 16_000
    num_threads: int = 2
    prefetch_batches: int = 4
    # Each example once per factor and epoch, replayed at that speed (training: 0.9, 1.0, 1.1).
    speed_factors: tuple[float, ...] = (1.0,)

    def __post_init__(self):
        ratios = [speed_perturbation.ratio(f) for f in self.speed_factors]  # range checked
        if not ratios or len(set(ratios)) != len(ratios) or any(
                p == q and f != 1.0 for (p, q), f in zip(ratios, self.speed_factors, strict=True)):
            raise ValueError(f"speed_factors {self.speed_factors} are empty or round to the "
                             f"same resampling ratios {ratios} (denominators <= "
                             f"{speed_perturbation.MAX_DENOMINATOR}) or to 1")
        if self.bad_example_policy not in ("error", "skip"):
            raise ValueError(f"bad_example_policy must be 'error' or 'skip', "
                             f"got {self.bad_example_policy!r}")
        if not 0.0 <= self.max_bad_share <= 1.0:
            raise ValueError(f"max_bad_share must be in [0, 1], got {self.max_bad_share}")
        if list(self.buckets) != sorted(self.buckets) or not self.buckets:
            raise ValueError(f"buckets must be a non-empty ascending list, got {self.buckets}")


def prepared_dir(name: str, data_dir: str | Path | None) -> epath.Path | None:
    """Newest prepared version directory of TFDS dataset `name` (`ds` or `ds/config`)."""
    root = epath.Path(data_dir or tfds.core.constants.DATA_DIR) / name
    if not root.is_dir():
        return None
    versions = [d for d in root.iterdir() if (d / "dataset_info.json").exists()
                and d.name.replace(".", "").isdigit()]
    return max(versions, key=lambda d: tuple(int(x) for x in d.name.split("."))) \
        if versions else None


def open_source(name: str, split: str, data_dir: str | Path | None, *,
                sample_rate: int = 16_000):
    """Opens a prepared TFDS dataset as a random-access data source (array_record).

    The dataset is read from its directory (`tfds.builder_from_directory`): no builder code,
    and no TensorFlow, is needed to read it.

    Raises:
      DataError: the dataset is not prepared under `data_dir`, is not array_record, lacks the
        split, or has another sample rate than `sample_rate`.
    """
    directory = prepared_dir(name, data_dir)
    if directory is None:
        where = data_dir or tfds.core.constants.DATA_DIR
        raise DataError(f"dataset {name!r} is not prepared under data dir {str(where)!r}; "
                        "build it first (python -m experiments.build_corpus) or fix --data_dir")
    builder = tfds.builder_from_directory(str(directory))
    if builder.info.file_format != tfds.core.FileFormat.ARRAY_RECORD:
        raise DataError(f"dataset {name!r} in {directory} is stored as "
                        f"{builder.info.file_format.value}; random access needs array_record "
                        "(convert with `tfds convert_format --out_file_format=array_record`)")
    if split not in builder.info.splits:
        raise DataError(f"dataset {name!r} has no split {split!r}; it has "
                        f"{sorted(builder.info.splits)}")
    found_rate = builder.info.metadata.get("sample_rate") if builder.info.metadata else None
    if found_rate is None:
        found_rate = getattr(builder.info.features["speech"], "sample_rate", None)
    if found_rate is not None and int(found_rate) != sample_rate:
        raise DataError(f"dataset {name!r} is sampled at {found_rate} Hz, the frontend expects "
                        f"{sample_rate} Hz")
    return builder.as_data_source(split=split)


@dataclasses.dataclass
class ScanReport:
    """Where each usable example goes, and what was left out and why."""

    indices: np.ndarray  # [N] usable example indices into the source (one per speed factor)
    buckets: np.ndarray  # [N] bucket of each usable example
    factors: np.ndarray  # [N] speed factor of each (1.0: as recorded)
    bad: dict[str, list[str]]  # reason -> example ids
    total: int  # examples x speed factors

    @property
    def num_bad(self) -> int:
        return sum(len(v) for v in self.bad.values())


def text_of(value: Any) -> str:
    """A text feature (bytes from array_record, str otherwise) as str."""
    return value.decode() if isinstance(value, bytes) else str(value)


def copy_id(example_id: str, factor: float) -> str:
    """The id of an example replayed at speed `factor` (the id itself at 1.0)."""
    return example_id if factor == 1.0 else f"{example_id}@sp{factor:g}"


def check_example(example: dict, tokenizer: Tokenizer, config: PipelineConfig,
                  factor: float = 1.0) -> int:
    """Returns the bucket of a valid example replayed at speed `factor`; raises BadExample
    naming it otherwise."""
    example_id = copy_id(text_of(example.get("id", "<no id>")), factor)
    speech = np.asarray(example["speech"])
    if speech.ndim != 1 or not np.issubdtype(speech.dtype, np.integer):
        raise BadExample("not int16 pcm", example_id, f"speech must be 1-D int16 PCM, got "
                         f"dtype {speech.dtype} shape {speech.shape}")
    if speech.dtype != np.int16 and speech.size and (speech.min() < -32768 or
                                                     speech.max() > 32767):
        raise BadExample("not int16 pcm", example_id,
                         f"{speech.dtype} speech outside the int16 range")
    if speech.size == 0:
        raise BadExample("empty audio", example_id, "zero-length audio")
    try:
        num_tokens = len(tokenizer.encode(text_of(example["text"]), example_id=example_id))
    except TranscriptError as e:
        raise BadExample("bad transcript", example_id, str(e).split(": ", 1)[1]) from e
    num_samples = speed_perturbation.perturbed_length(speech.size, factor)
    for bucket, (max_samples, max_tokens) in enumerate(config.buckets):
        if num_samples <= max_samples and num_tokens <= max_tokens:
            return bucket
    raise BadExample("too long", example_id,
                     f"{num_samples} samples / {num_tokens} tokens exceed the largest bucket "
                     f"{config.buckets[-1]}")


def scan(source: Sequence[dict], tokenizer: Tokenizer, config: PipelineConfig) -> ScanReport:
    """Validates every example once and assigns buckets (see module docstring for policies)."""
    indices, buckets, factors = [], [], []
    bad: dict[str, list[str]] = collections.defaultdict(list)
    for i in range(len(source)):
        try:
            example = _read(source, i)
        except BadExample as e:
            example = e
        for factor in config.speed_factors:  # each copy is used, or named as left out
            try:
                if isinstance(example, BadExample):
                    raise BadExample(example.reason, copy_id(example.example_id, factor),
                                     example.detail)
                bucket = check_example(example, tokenizer, config, factor)
            except BadExample as e:
                if config.bad_example_policy == "error":
                    raise DataError(f"{e} (bad_example_policy='skip' leaves such examples out, "
                                    "counted)") from e
                bad[e.reason].append(e.example_id)
                continue
            indices.append(i)
            buckets.append(bucket)
            factors.append(factor)
    report = ScanReport(np.asarray(indices, np.int64), np.asarray(buckets, np.int32),
                        np.asarray(factors, np.float64), dict(bad),
                        len(source) * len(config.speed_factors))
    if report.num_bad:
        logging.warning("skipped %d of %d examples: %s", report.num_bad, report.total,
                        {k: v[:10] for k, v in report.bad.items()})
    if not len(report.indices):
        raise DataError(f"no usable example among {report.total}")
    if report.num_bad > config.max_bad_share * report.total:
        raise DataError(f"{report.num_bad} of {report.total} examples are bad, more than "
                        f"max_bad_share={config.max_bad_share}: "
                        f"{ {k: v[:10] for k, v in report.bad.items()} }")
    return report


def _read(source: Sequence[dict], index: int) -> dict:
    """`source[index]`; a record that cannot be read or decoded is a BadExample."""
    try:
        example = source[index]
    except Exception as e:  # array_record / TFDS decoding errors have no common type
        raise BadExample("undecodable", f"record #{index}",
                         f"cannot be read: {type(e).__name__}: {e}") from e
    if not isinstance(example, dict) or "speech" not in example or "text" not in example:
        raise BadExample("undecodable", f"record #{index}", "has no speech and text features")
    return example


class BatchPlan:
    """Random-access list of global batches: item i -> (bucket, example indices `[B]`, -1 = pad,
    speed factors `[B]`).

    A grain data source: deterministic in `(seed, epoch)`, so any position can be re-read after
    a restart.
    """

    def __init__(self, report: ScanReport, config: PipelineConfig):
        self._report = report
        self._config = config
        size = config.global_batch_size
        counts = np.bincount(report.buckets, minlength=len(config.buckets))
        self.batches_per_epoch = int(sum(-(-c // size) for c in counts))

    def __len__(self) -> int:
        epochs = self._config.num_epochs
        return self.batches_per_epoch * epochs if epochs else 2**62

    @functools.lru_cache(maxsize=2)  # noqa: B019 (one plan per live epoch)
    def _epoch(self, epoch: int) -> list[tuple[int, np.ndarray]]:
        config, size = self._config, self._config.global_batch_size
        rng = np.random.default_rng([config.seed, epoch])
        batches = []
        report = self._report
        for bucket in range(len(config.buckets)):
            members = np.flatnonzero(report.buckets == bucket)  # positions in the report
            if config.shuffle:
                members = rng.permutation(members)
            rows = -(-len(members) // size) * size
            indices, factors = np.full(rows, -1, np.int64), np.ones(rows)
            indices[: len(members)] = report.indices[members]
            factors[: len(members)] = report.factors[members]
            batches += list(zip([bucket] * (rows // size), indices.reshape(-1, size),
                                factors.reshape(-1, size), strict=True))
        if config.shuffle:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        return batches

    def __getitem__(self, i: int) -> tuple[int, np.ndarray, np.ndarray]:
        epoch, position = divmod(int(i), self.batches_per_epoch)
        return self._epoch(epoch)[position]


class LoadBatch(grain.transforms.Map):
    """Reads this process's rows of a planned batch and pads them to the bucket's shape.

    Output (b = global batch / process count, S and U from the bucket):
      audio `[b, S]` int16, audio_lengths `[b]` int32, tokens `[b, U]` int32 (0-padded),
      token_lengths `[b]` int32, weights `[b]` float32 (0 for padding rows), ids `[b]` str.
    """

    def __init__(self, source, tokenizer: Tokenizer, config: PipelineConfig,
                 process_index: int, process_count: int):
        if config.global_batch_size % process_count:
            raise DataError(f"global batch size {config.global_batch_size} is not divisible by "
                            f"the process count {process_count}")
        self._source = source
        self._tokenizer = tokenizer
        self._config = config
        self._rows = config.global_batch_size // process_count
        self._first = process_index * self._rows

    def map(self, planned: tuple[int, np.ndarray, np.ndarray]) -> dict[str, np.ndarray]:
        bucket, indices, factors = planned
        max_samples, max_tokens = self._config.buckets[bucket]
        mine = slice(self._first, self._first + self._rows)
        batch = {
            "audio": np.zeros((self._rows, max_samples), np.int16),
            "audio_lengths": np.zeros(self._rows, np.int32),
            "tokens": np.zeros((self._rows, max_tokens), np.int32),
            "token_lengths": np.zeros(self._rows, np.int32),
            "weights": np.zeros(self._rows, np.float32),
            "ids": np.full(self._rows, "", dtype=object),
        }
        for row, (index, factor) in enumerate(zip(indices[mine], factors[mine], strict=True)):
            if index < 0:
                continue
            example = self._source[int(index)]
            example_id = copy_id(text_of(example["id"]), factor)
            speech = speed_perturbation.perturb(
                np.asarray(example["speech"]).astype(np.int16), factor)
            tokens = self._tokenizer.encode(text_of(example["text"]), example_id=example_id)
            batch["audio"][row, : speech.size] = speech
            batch["audio_lengths"][row] = speech.size
            batch["tokens"][row, : tokens.size] = tokens
            batch["token_lengths"][row] = tokens.size
            batch["weights"][row] = 1.0
            batch["ids"][row] = example_id
        return batch


def make_dataset(source, tokenizer: Tokenizer, report: ScanReport, config: PipelineConfig, *,
                 process_index: int = 0, process_count: int = 1) -> grain.IterDataset:
    """Batches of this process's rows; `iter()` of it has `get_state`/`set_state`."""
    plan = BatchPlan(report, config)
    dataset = grain.MapDataset.source(plan).map(
        LoadBatch(source, tokenizer, config, process_index, process_count))
    return dataset.to_iter_dataset(grain.ReadOptions(
        num_threads=config.num_threads, prefetch_buffer_size=config.prefetch_batches))
