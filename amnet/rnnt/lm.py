"""Token-level n-gram language model and lexicon, as automata for shallow fusion in beam search.

Both are deterministic automata over the transducer's vocabulary (token ids, id 0 = blank):
a state per context, `log_probs[s, v]` = log P(v | s) and `next_state[s, v]` the state after
emitting v, column 0 holding the end of the sentence (`</s>`, scored once when an utterance
ends). Decoding keeps one state per hypothesis and adds `weight * log_probs[s, v]` per label
(`amnet.rnnt.decoding`): two table lookups, the same cost whatever the order.

N-gram LM: interpolated Kneser-Ney over token sequences padded with n-1 start symbols. For a
context h of the highest order (n-1 tokens) with counts c(h, v), and for lower orders with
continuation counts c(h, v) = |{x : c(x h, v) > 0}|,
  P(v | h) = max(c(h, v) - D_k, 0) / c(h) + D_k N(h) / c(h) · P(v | h')
with c(h) = sum_v c(h, v), N(h) = |{v : c(h, v) > 0}|, h' = h without its oldest token, D_k =
n1 / (n1 + 2 n2) from the count-of-counts of order k (0.5 if n1 + n2 = 0), and the empty
context interpolated with the uniform distribution. The states are every context seen in
training (suffix-closed); an unseen context behaves as its longest seen suffix, as
interpolated KN does, so folding the back-off into `next_state` is exact. Characters (the
project's default vocabulary) make the LM open-vocabulary: a new name still gets a
probability, which word n-grams would not give.

Context (biasing): an Aho-Corasick automaton of phrases to boost, e.g. the new names of an
update (`build_context`); fused with a weight equal to the bonus per matched token.

Lexicon: a prefix tree of the words of the training transcripts; a label that does not
continue a word of the lexicon scores `NEG`, a space or the end is allowed only after a whole
word. It constrains the beam to known words (`decode with a lexicon`, docs/rnnt.md).

Files: safetensors with the two tables and a JSON header (`kind`, `order`, `vocab_size`,
`start`, `discounts`, `tokenizer`); no pickle.
"""

from __future__ import annotations

import collections
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
from safetensors.numpy import load_file, save_file

NEG = -1e30  # as amnet.rnnt.loss.NEG: a finite "log 0"
END = 0  # column of the end of the sentence (the blank id never appears in a transcript)
FORMAT = "amnet-automaton/1"
MAX_TABLE_ENTRIES = 2**27  # [S, V] entries of a table (two tables of 512 MiB each at most)


class Automaton(NamedTuple):
    """Deterministic scoring automaton (see module docstring)."""

    log_probs: np.ndarray  # [S, V] float32
    next_state: np.ndarray  # [S, V] int32
    start: int  # the state before the first token
    kind: str  # "ngram" or "lexicon"
    info: dict  # order, discounts, ... (stored in the file header)

    @property
    def num_states(self) -> int:
        return int(self.log_probs.shape[0])


def _check_sentences(sentences: Iterable[Sequence[int]], vocab_size: int) -> list[tuple]:
    out = []
    for i, tokens in enumerate(sentences):
        tokens = tuple(int(t) for t in tokens)
        bad = [t for t in tokens if not 0 < t < vocab_size]
        if bad:
            raise ValueError(f"sentence {i}: token ids {bad[:5]} outside 1..{vocab_size - 1} "
                             "(0 is the blank / end symbol)")
        out.append(tokens)
    if not out:
        raise ValueError("no sentences to build the language model from")
    return out


def _discount(counts: Iterable[int]) -> float:
    histogram = collections.Counter(c for c in counts if c <= 2)
    n1, n2 = histogram.get(1, 0), histogram.get(2, 0)
    return n1 / (n1 + 2 * n2) if n1 + n2 else 0.5


def build_ngram(sentences: Iterable[Sequence[int]], vocab_size: int, order: int) -> Automaton:
    """Interpolated Kneser-Ney n-gram LM of token-id sentences (module docstring)."""
    if order < 1:
        raise ValueError(f"n-gram order must be >= 1, got {order}")
    sentences = _check_sentences(sentences, vocab_size)
    bos = vocab_size  # the start symbol: in contexts only, never predicted
    context = order - 1
    # Highest order: raw counts of (context, token); token END closes each sentence.
    counts: dict[tuple, collections.Counter] = collections.defaultdict(collections.Counter)
    for tokens in sentences:
        padded = (bos,) * context + tokens + (END,)
        for i in range(context, len(padded)):
            counts[padded[i - context: i]][padded[i]] += 1
    # Lower orders: continuation counts, from the distinct (longer context, token) pairs.
    levels = [counts]
    for _ in range(context):
        lower: dict[tuple, collections.Counter] = collections.defaultdict(collections.Counter)
        for h, row in levels[-1].items():
            for v in row:
                lower[h[1:]][v] += 1
        levels.append(lower)
    levels = levels[::-1]  # levels[k]: contexts of k tokens
    discounts = [_discount(c for row in level.values() for c in row.values())
                 for level in levels]
    states = [h for level in levels for h in sorted(level)]  # by length: parents first
    if len(states) * vocab_size > MAX_TABLE_ENTRIES:
        raise ValueError(f"a {order}-gram LM of these sentences has {len(states):,} contexts x "
                         f"{vocab_size:,} tokens, more than the {MAX_TABLE_ENTRIES:,} entries of "
                         "a dense table; use a lower order or a character vocabulary")
    index = {h: i for i, h in enumerate(states)}
    probs = np.zeros((len(states), vocab_size), np.float64)
    uniform = np.full(vocab_size, 1.0 / vocab_size)
    for i, h in enumerate(states):
        row = levels[len(h)][h]
        lower = probs[index[h[1:]]] if h else uniform
        discount = discounts[len(h)]
        total = sum(row.values())
        seen = np.zeros(vocab_size)
        for v, c in row.items():
            seen[v] = max(c - discount, 0.0)
        probs[i] = (seen + discount * len(row) * lower) / total
    next_state = np.zeros((len(states), vocab_size), np.int32)
    for i, h in enumerate(states):
        # The longest suffix of h v that is a state: h v itself when seen, else the answer of
        # h's own back-off state (filled before h: states are ordered by length).
        if h:
            next_state[i] = next_state[index[h[1:]]]
        for v in levels[len(h)][h]:
            target = (h + (v,))[-context:] if context else ()
            if v != END and target in index:
                next_state[i, v] = index[target]
    next_state[:, END] = index[(bos,) * context]  # after </s>: a new sentence
    with np.errstate(divide="ignore"):
        log_probs = np.where(probs > 0, np.log(probs), NEG).astype(np.float32)
    return Automaton(log_probs, next_state, index[(bos,) * context], "ngram",
                     {"order": order, "discounts": discounts})


def build_lexicon(sentences: Iterable[Sequence[int]], vocab_size: int,
                  separator: int) -> Automaton:
    """Prefix tree of the words (token runs between `separator`s) of `sentences`."""
    sentences = _check_sentences(sentences, vocab_size)
    children: list[dict[int, int]] = [{}]
    word_end = [False]
    for tokens in sentences:
        node = 0
        for t in tokens + (separator,):
            if t == separator:
                if node:
                    word_end[node] = True
                node = 0
                continue
            if t not in children[node]:
                children[node][t] = len(children)
                children.append({})
                word_end.append(False)
            node = children[node][t]
    size = len(children)
    log_probs = np.full((size, vocab_size), NEG, np.float32)
    next_state = np.zeros((size, vocab_size), np.int32)
    for node, row in enumerate(children):
        for t, child in row.items():
            log_probs[node, t], next_state[node, t] = 0.0, child
        if word_end[node] or node == 0:
            log_probs[node, END] = 0.0
        if word_end[node]:
            log_probs[node, separator], next_state[node, separator] = 0.0, 0
    return Automaton(log_probs, next_state, 0, "lexicon",
                     {"words": int(sum(word_end)), "separator": separator})


def space_token(token_texts: Sequence[str]) -> int | None:
    """The id of the space in a character vocabulary (the word boundary `build_context`
    anchors phrases at); None for wordpieces, whose pieces mark word starts themselves."""
    return token_texts.index(" ") if " " in token_texts else None


def build_context(phrases: Iterable[Sequence[int]], vocab_size: int,
                  boundary: int | None = None) -> Automaton:
    """Contextual biasing toward `phrases` (token-id sequences: new words, names), as an
    Aho-Corasick automaton whose scores, times the fusion weight (the bonus per token), reward
    each token that extends a match, take back what a broken-off match earned, and keep what a
    completed phrase earned.

    States are the trie's nodes (phrase prefixes), Φ(s) the tokens matched at s. A label v
    moves s to t = the longest phrase prefix that ends the text (the goto/failure function)
    and scores Φ(t) - Φ(s), plus Φ(t) when t ends a phrase (banked: the fall back that follows
    takes Φ(t) back, the bank keeps it); the end of the utterance scores -Φ(s). Over an
    utterance the total is the summed length of the completed matches and a partial match
    nets 0, while during the search a hypothesis inside a match carries its bonus, so that it
    survives the beam until the phrase can complete. A phrase that ends inside a longer
    match (a proper suffix of it) is not banked. No phrases: every score 0 (plain search).

    `boundary` (the space token of a character vocabulary): phrases match at word starts
    only, as `boundary + phrase` where the boundary earns nothing (Φ counts the phrase's own
    tokens), and the utterance's start counts as one; without it a phrase also matches inside
    a word (what a long list of short words must not do).
    """
    phrases = list(phrases)
    if boundary is not None:
        phrases = [[boundary, *p] for p in phrases]
    phrases = _check_sentences(phrases, vocab_size) if phrases else []
    if any(not p for p in phrases):
        raise ValueError("an empty phrase cannot be boosted")
    children: list[dict[int, int]] = [{}]
    depth, ends = [0], [False]
    for phrase in phrases:
        node = 0
        for t in phrase:
            if t not in children[node]:
                children[node][t] = len(children)
                children.append({})
                depth.append(depth[node] + 1)
                ends.append(False)
            node = children[node][t]
        ends[node] = True
    size = len(children)
    next_state = np.zeros((size, vocab_size), np.int32)
    order = sorted(range(size), key=lambda s: depth[s])  # breadth first: failures known
    fail = [0] * size
    for s in order:
        for v in range(1, vocab_size):
            child = children[s].get(v)
            if child is not None:
                next_state[s, v] = child
                fail[child] = next_state[fail[s], v] if s else 0
            else:
                next_state[s, v] = next_state[fail[s], v] if s else 0
    potential = np.asarray(depth, np.float32)
    if boundary is not None:  # the boundary itself earns nothing: a space is no evidence
        potential = np.maximum(potential - 1, 0)
    log_probs = potential[next_state] - potential[:, None]
    log_probs += np.where(np.asarray(ends)[next_state], potential[next_state], 0.0)
    log_probs[:, END] = -potential
    next_state[:, END] = 0
    start = int(next_state[0, boundary]) if boundary is not None and phrases else 0
    return Automaton(log_probs.astype(np.float32), next_state, start, "context",
                     {"phrases": len(phrases)})


def score(automaton: Automaton, tokens: Sequence[int]) -> float:
    """log P(tokens </s>) under the automaton (natural log)."""
    state, total = automaton.start, 0.0
    for t in list(tokens) + [END]:
        total += float(automaton.log_probs[state, t])
        state = int(automaton.next_state[state, t])
    return total


def save(path: str | Path, automaton: Automaton, *, tokenizer: str) -> None:
    header = {"format": FORMAT, "kind": automaton.kind, "start": str(automaton.start),
              "vocab_size": str(automaton.log_probs.shape[1]), "tokenizer": tokenizer,
              "info": json.dumps(automaton.info)}
    save_file({"log_probs": automaton.log_probs, "next_state": automaton.next_state},
              str(path), metadata=header)


def load(path: str | Path, *, vocab_size: int | None = None) -> Automaton:
    """Reads an automaton file; a file of another format or vocabulary is a clear error."""
    path = Path(path)
    try:
        from safetensors import safe_open

        with safe_open(str(path), "numpy") as f:
            header = f.metadata() or {}
        tensors = load_file(str(path))
    except Exception as e:  # safetensors raises several types for unreadable files
        raise ValueError(f"cannot read automaton file {path}: {type(e).__name__}: {e}") from e
    if header.get("format") != FORMAT or set(tensors) != {"log_probs", "next_state"}:
        raise ValueError(f"{path} is not an {FORMAT} file (header {header})")
    automaton = Automaton(tensors["log_probs"].astype(np.float32),
                          tensors["next_state"].astype(np.int32), int(header["start"]),
                          header["kind"], json.loads(header["info"]))
    size, width = automaton.log_probs.shape
    if automaton.next_state.shape != (size, width) or not 0 <= automaton.start < size or \
            automaton.next_state.min() < 0 or automaton.next_state.max() >= size:
        raise ValueError(f"{path}: inconsistent tables {automaton.log_probs.shape}, "
                         f"{automaton.next_state.shape}, start {automaton.start}")
    if vocab_size is not None and width != vocab_size:
        raise ValueError(f"{path} scores {width} tokens, the model has {vocab_size}")
    return automaton
