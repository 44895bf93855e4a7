"""How each utterance of the spoken-commands corpus is made, deterministically from a seed.

`plan_split` decides, in the main process, every utterance of one split: its sentence (from the
grammar), speaker, speaking rate, pitch, padding and noise. `render` turns one plan into audio
and may run in any worker process: its output depends on the plan alone, so the corpus is
identical whatever the number of workers.

Reproducibility: eSpeak NG carries state from one utterance to the next within a process, so
plans are rendered in fixed chunks of RENDER_CHUNK, each by a fresh process (`render_chunk`).

Disjointness:
  * sentences: a sentence's split is a function of its text (`sentence_split`), the same in every
    generation, so no test sentence is ever a training sentence of any generation;
  * speakers: voice variants are split into train/validation/test once per seed; every accent
    is seen in every split, no (accent, variant) speaker is shared between splits.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Sequence

import numpy as np

from amnet.data.corpus import noise as noise_lib
from amnet.data.corpus.grammar import Grammar
from amnet.data.corpus.speech_synth import TARGET_SAMPLE_RATE, Speaker, Synthesizer, all_speakers
from amnet.data.text import normalize_text

SPLITS = ("train", "validation", "test")
# Utterances rendered in sequence by one fresh process: part of the corpus definition, since
# eSpeak NG's output depends on the utterances synthesized before in the same process.
RENDER_CHUNK = 128


@dataclasses.dataclass(frozen=True)
class AcousticConfig:
    """Ranges the per-utterance acoustic parameters are drawn from (uniform)."""

    rate_wpm: tuple[int, int] = (130, 210)  # eSpeak speaking rate, words per minute
    pitch: tuple[int, int] = (25, 75)  # eSpeak base pitch, 0..99
    pad_s: tuple[float, float] = (0.05, 0.35)  # silence added before and after the speech
    snr_db: tuple[float, float] = (5.0, 30.0)
    clean_share: float = 0.15  # share of utterances without added noise
    noise_colors: tuple[str, ...] = ("white", "pink", "brown")


@dataclasses.dataclass(frozen=True)
class SplitShares:
    """A sentence's split from its hash: percent of sentence space per split."""

    validation_percent: int = 5
    test_percent: int = 5


@dataclasses.dataclass(frozen=True)
class SpeakerSplit:
    """Number of voice variants held out for validation and test (each with every accent)."""

    validation_variants: int = 8
    test_variants: int = 12


@dataclasses.dataclass(frozen=True)
class UtterancePlan:
    """Everything needed to render one utterance."""

    key: str
    text: str
    intent: str
    speaker: Speaker
    rate_wpm: int
    pitch: int
    pad_before: int  # samples at 16 kHz
    pad_after: int
    noise_color: str | None
    snr_db: float
    noise_seed: int


def sentence_split(text: str, shares: SplitShares = SplitShares()) -> str:
    """The split a sentence belongs to in every generation, from a stable hash of its text."""
    bucket = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") % 100
    if bucket < shares.test_percent:
        return "test"
    if bucket < shares.test_percent + shares.validation_percent:
        return "validation"
    return "train"


def speakers_by_split(variants: Sequence[str], seed: int,
                      split: SpeakerSplit = SpeakerSplit()) -> dict[str, list[Speaker]]:
    """Partitions all accent x variant speakers by variant into the three splits."""
    held_out = split.validation_variants + split.test_variants
    if len(variants) <= held_out:
        raise ValueError(f"only {len(variants)} voice variants, need more than {held_out}")
    order = np.random.default_rng([seed, 0x5BEA]).permutation(len(variants))
    test = {variants[i] for i in order[: split.test_variants]}
    validation = {variants[i] for i in order[split.test_variants: held_out]}
    by_split: dict[str, list[Speaker]] = {name: [] for name in SPLITS}
    for speaker in all_speakers(list(variants)):
        name = ("test" if speaker.variant in test else
                "validation" if speaker.variant in validation else "train")
        by_split[name].append(speaker)
    return by_split


def plan_split(*, generation: int, split: str, num_fresh: int, num_replay: int,
               speakers: Sequence[Speaker], seed: int,
               acoustic: AcousticConfig = AcousticConfig(),
               shares: SplitShares = SplitShares(), max_tries_per_sentence: int = 2000,
               ) -> list[UtterancePlan]:
    """Plans `num_fresh` new-in-generation plus `num_replay` replayed utterances of one split.

    Validation and test sentences are unique within the split; training sentences may repeat
    (spoken by different speakers), as in real command logs.
    """
    grammar = Grammar(generation)
    split_index = SPLITS.index(split)
    text_rng = np.random.default_rng([seed, generation, split_index, 1])
    seen: set[str] = set()
    sentences: list[tuple[str, str]] = []
    for fresh, count in ((True, num_fresh), (False, num_replay)):
        for _ in range(count):
            for _ in range(max_tries_per_sentence):
                text, intent = grammar.sample(text_rng, fresh=fresh)
                if sentence_split(text, shares) == split and (split == "train" or text not in seen):
                    break
            else:
                raise RuntimeError(
                    f"generation {generation} {split}: no new sentence after "
                    f"{max_tries_per_sentence} draws; the grammar is too small for this size")
            if normalize_text(text) != text:
                raise ValueError(f"grammar produced a non-normalized sentence: {text!r}")
            seen.add(text)
            sentences.append((text, intent))

    plans = []
    for i, (text, intent) in enumerate(sentences):
        rng = np.random.default_rng([seed, generation, split_index, 2, i])
        noisy = rng.random() >= acoustic.clean_share
        plans.append(UtterancePlan(
            key=f"g{generation}-{split}-{i:06d}",
            text=text,
            intent=intent,
            speaker=speakers[int(rng.integers(len(speakers)))],
            rate_wpm=int(rng.integers(acoustic.rate_wpm[0], acoustic.rate_wpm[1] + 1)),
            pitch=int(rng.integers(acoustic.pitch[0], acoustic.pitch[1] + 1)),
            pad_before=int(rng.uniform(*acoustic.pad_s) * TARGET_SAMPLE_RATE),
            pad_after=int(rng.uniform(*acoustic.pad_s) * TARGET_SAMPLE_RATE),
            noise_color=str(rng.choice(acoustic.noise_colors)) if noisy else None,
            snr_db=float(rng.uniform(*acoustic.snr_db)),
            noise_seed=int(rng.integers(2**63)),
        ))
    return plans


def render(plan: UtterancePlan) -> np.ndarray:
    """Speech `[S]` int16 at 16 kHz for `plan` (depends on the process's earlier utterances)."""
    speech = Synthesizer().synthesize(plan.text, plan.speaker, rate_wpm=plan.rate_wpm,
                                      pitch=plan.pitch, seed=plan.noise_seed % 2**31)
    if speech.size == 0:
        raise RuntimeError(f"{plan.key}: eSpeak NG produced no audio for {plan.text!r}")
    speech = np.pad(speech, (plan.pad_before, plan.pad_after))
    if plan.noise_color is None:
        return speech
    rng = np.random.default_rng(plan.noise_seed)
    noise = noise_lib.colored_noise(rng, speech.size, plan.noise_color)
    return noise_lib.add_noise(speech, noise, plan.snr_db)


def render_chunk(plans: Sequence[UtterancePlan]) -> list[np.ndarray]:
    """Renders consecutive plans in order. Call it in a fresh process for reproducible audio."""
    return [render(plan) for plan in plans]
