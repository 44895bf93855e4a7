"""TFDS dataset `spoken_commands`: synthesized voice-assistant commands, generations g0..g5.

Configs are named `<size>_g<generation>` (`tiny_g0`, `small_g3`, `full_g5`, ...). Features
follow TFDS `librispeech` (`speech`, `text`, `speaker_id`, `id`), plus `intent`. Written as
array_record, readable with `tfds.data_source` and grain, no TensorFlow needed.

    builder = SpokenCommands(config="small_g0", data_dir="~/tensorflow_datasets")
    builder.download_and_prepare()
    source = builder.as_data_source(split="train")
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import re

import numpy as np
import tensorflow_datasets as tfds
import tqdm
from tensorflow_datasets.core import shuffle as tfds_shuffle

from amnet.data.corpus import recipe
from amnet.data.corpus.grammar import NUM_GENERATIONS
from amnet.data.corpus.speech_synth import TARGET_SAMPLE_RATE, Synthesizer


@dataclasses.dataclass(frozen=True)
class SplitSizes:
    """Utterances per split; `train` counts both fresh and replayed utterances."""

    train: int
    validation: int
    test: int


@dataclasses.dataclass(frozen=True)
class CorpusSize:
    base: SplitSizes  # generation 0
    update: SplitSizes  # each generation 1..5
    replay_share: float = 0.3  # share of an update's training set replayed from earlier ones


SIZES = {
    "tiny": CorpusSize(base=SplitSizes(48, 12, 12), update=SplitSizes(24, 8, 8)),
    "small": CorpusSize(base=SplitSizes(6000, 300, 300), update=SplitSizes(1500, 200, 200)),
    "full": CorpusSize(base=SplitSizes(12000, 1000, 1000), update=SplitSizes(3500, 500, 500)),
}
DEFAULT_SEED = 20_261_125
# TFDS's writer shuffles in memory up to 1 GB and spills to TensorFlow's gfile beyond that.
# Building must not need TensorFlow, so the in-memory limit is raised: a split is held in
# memory while it is written (about 1.3 GB for the largest split, full_g0 train).
SHUFFLE_MEMORY_BYTES = 8 << 30


@dataclasses.dataclass(kw_only=True)
class SpokenCommandsConfig(tfds.core.BuilderConfig):
    """One corpus generation at one size, with the seed that fixes every example."""

    size: str = "tiny"
    generation: int = 0
    seed: int = DEFAULT_SEED

    def __post_init__(self):
        if self.size not in SIZES:
            raise ValueError(f"unknown corpus size {self.size!r}; choose from {sorted(SIZES)}")
        if not 0 <= self.generation < NUM_GENERATIONS:
            raise ValueError(f"generation must be in [0, {NUM_GENERATIONS}), "
                             f"got {self.generation}")


def make_config(size: str, generation: int, *, seed: int = DEFAULT_SEED) -> SpokenCommandsConfig:
    """A config named `<size>_g<generation>` (with `_s<seed>` when the seed is not the default)."""
    name = f"{size}_g{generation}" + ("" if seed == DEFAULT_SEED else f"_s{seed}")
    return SpokenCommandsConfig(name=name, size=size, generation=generation, seed=seed,
                                description=f"{size} corpus, generation g{generation}")


_NAME = re.compile(r"spoken_commands/(?P<size>\w+?)_g(?P<generation>\d)(?:_s(?P<seed>\d+))?$")


def builder_from_name(name: str, *, data_dir: str | None = None) -> SpokenCommands | None:
    """The builder for a TFDS name made by `make_config` (`spoken_commands/small_g0[_s7]`), or
    None when `name` is not one of this corpus."""
    match = _NAME.match(name)
    if match is None:
        return None
    seed = int(match["seed"]) if match["seed"] else DEFAULT_SEED
    return make_builder(match["size"], int(match["generation"]), data_dir=data_dir, seed=seed)


def make_builder(size: str, generation: int, *, data_dir: str | None = None,
                 seed: int = DEFAULT_SEED, num_workers: int = 0) -> SpokenCommands:
    """The builder of one corpus generation (registered config, or a custom one for other seeds)."""
    config = make_config(size, generation, seed=seed)
    return SpokenCommands(config=config.name if seed == DEFAULT_SEED else config,
                          data_dir=data_dir, num_workers=num_workers)


def split_plans(config: SpokenCommandsConfig, split: str,
                speakers: dict | None = None) -> list[recipe.UtterancePlan]:
    """The plans of one split of a corpus config, in the order the builder writes them."""
    size = SIZES[config.size]
    sizes = size.base if config.generation == 0 else size.update
    speakers = speakers or recipe.speakers_by_split(Synthesizer().variants(), config.seed)
    total = getattr(sizes, split)
    replay = round(total * size.replay_share) if split == "train" and config.generation else 0
    return recipe.plan_split(generation=config.generation, split=split,
                             num_fresh=total - replay, num_replay=replay,
                             speakers=speakers[split], seed=config.seed)


# SNR bands of the per-condition report, dB.
SNR_BANDS = ((5.0, 10.0), (10.0, 20.0), (20.0, 30.0))


def conditions(name: str, split: str) -> dict[str, dict[str, str]]:
    """Recording conditions of every utterance of a split, by id: its eSpeak `accent`, `noise`
    ("clean" or the colour) and `snr` band, recomputed from the corpus recipe (nothing is read
    from the audio). Empty for datasets that are not this corpus."""
    builder = builder_from_name(name)
    if builder is None:
        return {}
    out = {}
    for plan in split_plans(builder.builder_config, split):
        band = next(f"{lo:g}-{hi:g} dB" for lo, hi in SNR_BANDS if plan.snr_db <= hi)
        out[plan.key] = {"accent": plan.speaker.accent,
                         "noise": plan.noise_color or "clean",
                         "snr": band if plan.noise_color else "clean"}
    return out


def _render_examples(plans: list[recipe.UtterancePlan]) -> list[tuple[str, dict]]:
    return [(plan.key, {
        "speech": speech,
        "text": plan.text,
        "speaker_id": plan.speaker.speaker_id,
        "id": plan.key,
        "intent": plan.intent,
    }) for plan, speech in zip(plans, recipe.render_chunk(plans), strict=True)]


class SpokenCommands(tfds.core.GeneratorBasedBuilder):
    """Voice-assistant commands spoken by eSpeak NG voices, with noise."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release."}
    BUILDER_CONFIGS = [make_config(size, g) for size in SIZES for g in range(NUM_GENERATIONS)]
    DEFAULT_CONFIG_NAME = "small_g0"

    def __init__(self, *, num_workers: int = 0, **kwargs):
        """`num_workers`: synthesis processes (0: one per core); the data do not depend on it."""
        kwargs.setdefault("file_format", "array_record")
        super().__init__(**kwargs)
        self._num_workers = num_workers or os.cpu_count() or 1

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=__doc__.split("\n\n")[0],
            features=tfds.features.FeaturesDict({
                "speech": tfds.features.Tensor(shape=(None,), dtype=np.int16),
                "text": tfds.features.Text(),
                "speaker_id": np.int64,
                "id": tfds.features.Text(),
                "intent": tfds.features.Text(),
            }),
            supervised_keys=("speech", "text"),
            metadata=tfds.core.MetadataDict(sample_rate=TARGET_SAMPLE_RATE),
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # everything is synthesized locally
        tfds_shuffle.MAX_MEM_BUFFER_SIZE = max(tfds_shuffle.MAX_MEM_BUFFER_SIZE,
                                               SHUFFLE_MEMORY_BYTES)
        config: SpokenCommandsConfig = self.builder_config
        speakers = recipe.speakers_by_split(Synthesizer().variants(), config.seed)
        self.info.metadata.update(seed=config.seed, generation=config.generation,
                                  size=config.size,
                                  speakers={k: len(v) for k, v in speakers.items()})
        return {split: self._generate_examples(split_plans(config, split, speakers))
                for split in recipe.SPLITS}

    def _generate_examples(self, plans: list[recipe.UtterancePlan]):
        chunks = [plans[i: i + recipe.RENDER_CHUNK]
                  for i in range(0, len(plans), recipe.RENDER_CHUNK)]
        workers = min(self._num_workers, len(chunks))
        desc = f"synthesizing {plans[0].key.rsplit('-', 1)[0]}"
        # One fresh process per chunk (maxtasksperchild=1): the audio does not depend on the
        # number of workers or on what a process rendered before.
        context = multiprocessing.get_context("spawn")
        with (context.Pool(workers, maxtasksperchild=1) as pool,
              tqdm.tqdm(total=len(plans), desc=desc, unit="utt", leave=False) as bar):
            for examples in pool.imap(_render_examples, chunks):
                yield from examples
                bar.update(len(examples))
