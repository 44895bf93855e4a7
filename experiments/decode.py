r"""Decode a finished run's split with chosen decoders: greedy, beam, beam + LM (a grid of fusion
weights), CTC greedy; prints a WER table. The fusion weights of a recipe are chosen with it on
the validation split, never on test.

    python -m experiments.decode --run_dir=runs/demo --split=validation \
        --lm_weights=0.3,0.5,0.7 --length_bonus=0.5,1.0,1.5 [--lm_order=6] [--lexicon]
    python -m experiments.decode --run_dir=runs/demo --split=test --data_dir=data \
        --context=new_words.txt --context_bonus=1,2,4      # contextual biasing (amnet.rnnt.lm)

The LM is the run's (`lm.safetensors`, built from its training transcripts on first use), or,
with --lm_order other than the run's, one of that order built from the same transcripts (kept
in memory).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path

from absl import app, flags, logging

from amnet import build
from amnet.data import datasets
from amnet.evaluation import decode_fns, evaluator, shallow_fusion
from amnet.rnnt import lm
from amnet.training import checkpointing, parallel, rundir

_RUN_DIR = flags.DEFINE_string("run_dir", None, "A finished run (experiments.train).",
                               required=True)
_SPLIT = flags.DEFINE_string("split", "validation", "Split of the run's dataset to decode.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "Where the corpus is (default: the run's).")
_BEAM = flags.DEFINE_integer("beam", None, "Beam width (default: the run's lm.beam).")
_LM_ORDER = flags.DEFINE_integer("lm_order", None, "n-gram order (default: the run's).")
_LM_WEIGHTS = flags.DEFINE_list("lm_weights", [], "LM weights to try (none: the run's).")
_LENGTH_BONUS = flags.DEFINE_list("length_bonus", [], "Length bonuses to try (none: the run's).")
_LEXICON = flags.DEFINE_bool("lexicon", False, "Also constrain words to the training lexicon.")
_CONTEXT = flags.DEFINE_string("context", None, "Phrases to boost in beam search, one per "
                               "line (contextual biasing: amnet.rnnt.lm.build_context).")
_CONTEXT_BONUS = flags.DEFINE_list("context_bonus", ["2"], "Bonuses per matched token to try.")
_PLAIN = flags.DEFINE_bool("plain", True, "Also decode greedy, beam without LM and CTC greedy.")
_OUT = flags.DEFINE_string("out", None, "Write the table as JSON here.")


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.WARNING)
    run_dir = Path(_RUN_DIR.value)
    config = rundir.read_run_config(run_dir, _DATA_DIR.value)
    tokenizer = build.tokenizer(config)
    front, _ = build.frontend_configs(config)
    model = build.model(config, tokenizer.vocab_size)
    params, _ = checkpointing.load_params(run_dir)
    mesh = parallel.make_mesh(1)
    split = datasets.open_eval_split(config, _SPLIT.value, tokenizer)
    beam = _BEAM.value or config.lm.beam
    common = {"max_length": config.eval.max_length,
              "max_symbols_per_frame": config.eval.max_symbols_per_frame}
    decoders = {}
    if _PLAIN.value:
        decoders["greedy"] = decode_fns.make_decoder(model, front, beam=0, **common)
        decoders[f"beam {beam}"] = decode_fns.make_decoder(model, front, beam=beam, **common)
        if model.config.ctc_head:
            decoders["CTC greedy"] = decode_fns.make_ctc_decoder(model, front)
    weights = [float(w) for w in _LM_WEIGHTS.value] or [config.lm.weight]
    bonuses = [float(b) for b in _LENGTH_BONUS.value] or [config.lm.length_bonus]
    context = (lm.build_context(shallow_fusion.read_phrases(_CONTEXT.value, tokenizer),
                                tokenizer.vocab_size,
                                boundary=lm.space_token(tokenizer.token_texts()))
               if _CONTEXT.value else None)
    boosts = [float(b) for b in _CONTEXT_BONUS.value]
    for label, fusion in shallow_fusion.fusion_grid(
            config, run_dir, tokenizer, order=_LM_ORDER.value, lexicon=_LEXICON.value,
            weights=weights, bonuses=bonuses, context=context, context_bonuses=boosts):
        decoders[label] = decode_fns.make_decoder(model, front, beam=beam, fusion=fusion,
                                                  **common)
    rows = []
    print(f"| {_SPLIT.value} of {run_dir} | WER | substitutions | deletions | insertions | s |")
    print("|---|---:|---:|---:|---:|---:|")
    for label, decode in decoders.items():
        start = time.perf_counter()
        counts, _ = evaluator.validate({label: decode}, None, params, split, tokenizer, mesh)
        c = counts[label]
        seconds = time.perf_counter() - start
        rows.append({"decoder": label, "wer": c.rate, "substitutions": c.substitutions,
                     "deletions": c.deletions, "insertions": c.insertions,
                     "words": c.reference_length, "seconds": seconds})
        print(f"| {label} | {c.rate:.2%} | {c.substitutions} | {c.deletions} | {c.insertions} "
              f"| {seconds:.0f} |", flush=True)
    if _OUT.value:
        Path(_OUT.value).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    app.run(main)
