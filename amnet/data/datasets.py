"""The splits a run reads: data sources (the embedded corpus is built on first use), pipeline
configs from the run config, evaluation splits validated once, training transcripts."""

from __future__ import annotations

import ml_collections
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
