"""Corpus report: builds generations and tabulates utterances, hours, speakers, vocabulary."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence

import tensorflow_datasets as tfds

from amnet.data.corpus import grammar, spoken_commands


@dataclasses.dataclass(frozen=True)
class SplitStats:
    utterances: int
    hours: float
    speakers: int
    vocabulary: frozenset[str]
    intents: int
    mean_seconds: float


def split_statistics(source: Sequence[dict], sample_rate: int) -> SplitStats:
    """Reads every example of a split once."""
    samples, speakers, words, intents = 0, set(), set(), set()
    for i in range(len(source)):
        example = source[i]
        samples += len(example["speech"])
        speakers.add(int(example["speaker_id"]))
        text = example["text"]
        words.update((text.decode() if isinstance(text, bytes) else text).split())
        intent = example.get("intent", b"")
        intents.add(intent.decode() if isinstance(intent, bytes) else intent)
    seconds = samples / sample_rate
    return SplitStats(len(source), seconds / 3600.0, len(speakers), frozenset(words),
                      len(intents), seconds / max(len(source), 1))


def format_table(rows: Iterable[tuple[str, str, SplitStats]],
                 previous_vocabulary: dict[str, frozenset[str]] | None = None) -> str:
    """Markdown table; `new words` counts words absent from the earlier generations' corpora."""
    lines = ["| config | split | utterances | hours | mean s | speakers | intents | vocabulary "
             "| new words |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for config, split, stats in rows:
        earlier = (previous_vocabulary or {}).get(config, frozenset())
        lines.append(
            f"| {config} | {split} | {stats.utterances} | {stats.hours:.2f} | "
            f"{stats.mean_seconds:.2f} | {stats.speakers} | {stats.intents} | "
            f"{len(stats.vocabulary)} | {len(stats.vocabulary - earlier)} |")
    return "\n".join(lines)


def build_and_describe(size: str, generations: Sequence[int], data_dir: str | None,
                       seed: int = spoken_commands.DEFAULT_SEED, num_workers: int = 0) -> str:
    """Builds (or reuses) each generation and returns the statistics table (markdown)."""
    tfds.disable_progress_bar()  # the builder shows its own synthesis progress bar
    rows, earlier, vocabulary = [], {}, frozenset()
    for generation in generations:
        builder = spoken_commands.make_builder(size, generation, data_dir=data_dir, seed=seed,
                                               num_workers=num_workers)
        builder.download_and_prepare()
        name = builder.builder_config.name
        sample_rate = builder.info.metadata["sample_rate"]
        generation_words = set()
        for split in builder.info.splits:
            stats = split_statistics(builder.as_data_source(split=split), sample_rate)
            rows.append((name, split, stats))
            generation_words |= stats.vocabulary
        earlier[name] = vocabulary
        vocabulary = vocabulary | generation_words
    grammar_words = len(grammar.Grammar(grammar.NUM_GENERATIONS - 1).vocabulary())
    return (f"{format_table(rows, earlier)}\n\nwords used by the corpora built: "
            f"{len(vocabulary)}; words the grammar of all {grammar.NUM_GENERATIONS} "
            f"generations can produce: {grammar_words}")
