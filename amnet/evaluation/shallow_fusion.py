"""A run's shallow fusion (the `lm` config block): the n-gram LM of its training transcripts
(and optionally their lexicon), built once into the run directory and read from there."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path

import jax
import ml_collections

from amnet.data import datasets, text
from amnet.rnnt import decoding, lm
from amnet.training import parallel

LM_FILE = "lm.safetensors"


LEXICON_FILE = "lexicon.safetensors"


def run_lm(config: ml_collections.ConfigDict, workdir: Path, tokenizer, source=None,
           ) -> tuple[list[lm.Automaton], list[float], float]:
    """(automata, weights, length bonus) of the run's shallow fusion (`lm` config block): the
    n-gram LM (and with `lm.lexicon` the lexicon) of the training transcripts, built once into
    the run dir (`lm.safetensors`, `lexicon.safetensors`) and read from there afterwards."""
    c = config.lm
    paths = [workdir / LM_FILE] + ([workdir / LEXICON_FILE] if c.lexicon else [])
    if not all(p.exists() for p in paths):
        sentences = datasets.training_transcripts(config, tokenizer, source)
        built = [lm.build_ngram(sentences, tokenizer.vocab_size, c.order)]
        if c.lexicon:
            built.append(lm.build_lexicon(sentences, tokenizer.vocab_size,
                                          _separator(tokenizer)))
        if jax.process_index() == 0:
            for automaton, path in zip(built, paths, strict=True):
                lm.save(path, automaton, tokenizer=str(config.data.tokenizer))
        parallel.sync("language model written")
    automata = [lm.load(p, vocab_size=tokenizer.vocab_size) for p in paths]
    return automata, [c.weight] + ([c.lexicon_weight] if c.lexicon else []), c.length_bonus


def _separator(tokenizer) -> int:
    """The token id of the word separator (a space) of a character tokenizer."""
    ids = tokenizer.encode("a b")
    if len(ids) != 3:
        raise ValueError("the lexicon needs a character tokenizer (a space token between words)")
    return int(ids[1])


def read_phrases(path: str | Path, tokenizer) -> list:
    """Token ids of the phrases in a file, one per line (blank lines skipped)."""
    return [tokenizer.encode(phrase, example_id=where) for phrase, where in
            text.read_phrases(path)]


def fusion_grid(config, run_dir: Path, tokenizer, *, order: int | None, lexicon: bool,
                weights: Sequence[float], bonuses: Sequence[float], context=None,
                context_bonuses: Sequence[float] = ()):
    """[(label, Fusion)] for every (weight, bonus) pair, and with a context automaton
    (`lm.build_context`) for every context bonus."""
    run_order = config.lm.order
    if order is None or order == run_order:
        ngram = run_lm(config, run_dir, tokenizer)[0][0]
    else:
        ngram = lm.build_ngram(datasets.training_transcripts(config, tokenizer),
                               tokenizer.vocab_size, order)
    automata = [ngram]
    if lexicon:
        config = config.copy_and_resolve_references()
        config.lm.lexicon = True
        automata.append(run_lm(config, run_dir, tokenizer)[0][1])
    out = []
    for weight, bonus, boost in itertools.product(
            weights, bonuses, context_bonuses if context is not None else [None]):
        label = f"beam + {ngram.info['order']}-gram LM, weight {weight:g}, bonus {bonus:g}"
        if lexicon:
            label += f", lexicon {config.lm.lexicon_weight:g}"
        fusion_weights = [weight] + ([config.lm.lexicon_weight] if lexicon else [])
        fused = automata
        if boost is not None:
            label += f", context bonus {boost:g}"
            fused, fusion_weights = automata + [context], fusion_weights + [boost]
        out.append((label, decoding.Fusion.of(fused, fusion_weights, bonus)))
    return out
