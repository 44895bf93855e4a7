"""A run's shallow fusion (the `lm` config block): the n-gram LM of its training transcripts
(and optionally their lexicon), built once into the run directory and read from there."""

from __future__ import annotations

from pathlib import Path

import jax
import ml_collections

from amnet.data import datasets
from amnet.rnnt import lm
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
