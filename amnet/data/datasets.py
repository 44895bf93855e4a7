"""The splits a run reads: data sources (the embedded corpus is built on first use), pipeline
configs from the run config, evaluation splits validated once, training transcripts."""

from __future__ import annotations

from collections.abc import Sequence

import ml_collections
import numpy as np
from absl import logging

from amnet.data import input_pipeline
from amnet.data.corpus import spoken_commands
from amnet.data.input_pipeline import PipelineConfig


def open_dataset(config: ml_collections.ConfigDict, split: str):
    """The split's data source; the embedded corpus is built first when missing."""
    builder = spoken_commands.builder_from_name(config.data.name, data_dir=config.data.data_dir)
    if builder is not None:
        if not builder.is_prepared():
            logging.info("building %s", config.data.name)
            builder.download_and_prepare()
    return input_pipeline.open_source(config.data.name, split, config.data.data_dir)


def pipeline_config(config: ml_collections.ConfigDict, *, batch_size: int, train: bool):
    return input_pipeline.PipelineConfig(
        buckets=tuple(tuple(b) for b in config.data.buckets), global_batch_size=batch_size,
        seed=config.seed, shuffle=train, num_epochs=None if train else 1,
        bad_example_policy=config.data.bad_example_policy,
        max_bad_share=config.data.get("max_bad_share", PipelineConfig.max_bad_share),
        num_threads=config.data.num_threads,
        prefetch_batches=config.data.prefetch_batches,
        speed_factors=tuple(config.data.get("speed_factors", (1.0,))) if train else (1.0,))


def open_eval_split(config: ml_collections.ConfigDict, split: str, tokenizer):
    """(source, scan report, pipeline config) of an evaluation split, validated once."""
    source = open_dataset(config, split)
    pipe = pipeline_config(config, batch_size=config.eval.batch_size, train=False)
    return source, input_pipeline.scan(source, tokenizer, pipe), pipe


def training_transcripts(config: ml_collections.ConfigDict, tokenizer, source=None,
                         ) -> list[list[int]]:
    """The token ids of every transcript of the training split (`source`: its data source)."""
    source = source if source is not None else open_dataset(config, config.data.train_split)
    return [tokenizer.encode(input_pipeline.text_of(source[i]["text"]))
            for i in range(len(source))]


class Selection(Sequence):
    """Chosen records of several sources, one source after the other, as one random-access
    source: `parts` = [(source, indices)], record i of the whole is `source[indices[j]]` of
    the part it falls in. An update's training split plus replayed base data is one."""

    def __init__(self, parts: Sequence[tuple[Sequence[dict], Sequence[int]]]):
        self._parts = []
        for k, (source, indices) in enumerate(parts):
            indices = np.asarray(indices, np.int64)
            if indices.ndim != 1 or (indices.size and (indices.min() < 0 or
                                                       indices.max() >= len(source))):
                raise ValueError(f"part {k}: indices must be 1-D within [0, {len(source)}), "
                                 f"got shape {indices.shape}")
            self._parts.append((source, indices))
        self._starts = np.cumsum([0] + [len(i) for _, i in self._parts])

    def __len__(self) -> int:
        return int(self._starts[-1])

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < len(self):
            raise IndexError(f"record {index} of a selection of {len(self)}")
        part = int(np.searchsorted(self._starts, index, side="right")) - 1
        source, indices = self._parts[part]
        return source[int(indices[index - self._starts[part]])]


def with_replay(source: Sequence[dict], base: Sequence[dict], share: float,
                seed: int) -> Sequence[dict]:
    """`source` plus round(share * len(source)) records of `base` drawn without replacement
    (seeded; all of `base` at most): an update that rehearses the data its base model learned.
    `share` 0 returns `source` itself."""
    if share < 0:
        raise ValueError(f"replay share must be >= 0, got {share}")
    count = min(round(share * len(source)), len(base))
    if count == 0:
        return source
    chosen = np.sort(np.random.default_rng(seed).choice(len(base), count, replace=False))
    return Selection([(source, np.arange(len(source))), (base, chosen)])
