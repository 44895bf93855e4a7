r"""Contextual biasing as the zero-byte update, against the neural diffs and combined with them.

    python -m experiments.neuraldiff_biasing --config=experiments/configs/neuraldiff.py:small \
        --config.base_run=runs/dense_small --workdir=runs/neuraldiff --data_dir=data \
        --chains=full,sparse_10pct --bonus=0.5 [--generations=1,5]

Reads a finished `experiments.neuraldiff_generations` workdir. For each generation g: beam
search with the g0 model (no update shipped: zero bytes) and with each listed chain's model
after update g, each without and with biasing toward the words generations 1..g introduced
(`grammar.Grammar(k).new_words()`, a context automaton of `amnet.rnnt.lm.build_context`, matched
at word starts, fused with a per-token bonus), on g's test split (new-word recall, WER) and on
g0's (everything else). Transcripts go to <workdir>/biasing/ (reused when re-run); the table
to results.{json,md} there.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from absl import logging

from amnet.data.corpus import grammar
from amnet.evaluation import results as results_io
from amnet.evaluation.metrics import word_errors, word_recall
from amnet.rnnt import decoding, lm
from amnet.studies.neuraldiff_chains import check_base_run
from amnet.studies.update_trainer import UpdateTrainer, with_base_frontend
from amnet.training import checkpointing
from neuraldiff import model_file, updates


def context_words(generation: int) -> list[str]:
    """The biasing list at generation g: every word generations 1..g introduced."""
    words = set()
    for k in range(1, generation + 1):
        words |= grammar.Grammar(k).new_words()
    return sorted(words)


def _row(model: str, mode: str, generation: int, new_split: list, old_split: list) -> dict:
    def hyps(outputs):
        return [o.reference for o in outputs], [o.beam for o in outputs]

    found = word_recall(*hyps(new_split), grammar.Grammar(generation).new_words())
    return {"generation": generation, "model": model, "decoder": mode,
            "new_word_recall": found.rate, "recognized": found.recognized,
            "occurrences": found.occurrences, "wer_new": word_errors(*hyps(new_split)).rate,
            "wer_g0": word_errors(*hyps(old_split)).rate}


def run(config, workdir: str, chains: Sequence[str], bonus: float,
        generations: Sequence[int]) -> str:
    config = with_base_frontend(config)
    check_base_run(config)
    trainer = UpdateTrainer(config)
    out_dir = Path(workdir) / "biasing"
    out_dir.mkdir(parents=True, exist_ok=True)
    base = updates.flat(checkpointing.load_params(config.base_run)[0])
    plain = trainer.beam_decoder()

    def outputs(name: str, params, test: int, decoder) -> list:
        path = out_dir / f"{name}_test{test}.jsonl"
        if path.exists():
            return results_io.read_outputs(path)
        logging.info("decoding %s", path.name)
        result = trainer.beam_outputs(params, test, decoder)
        results_io.write_outputs(path, result)
        return result

    rows = []
    for g in generations:
        words = context_words(g)
        context = lm.build_context(
            [trainer.tokenizer.encode(w) for w in words], trainer.tokenizer.vocab_size,
            boundary=lm.space_token(trainer.tokenizer.token_texts()))
        biased = trainer.beam_decoder(decoding.Fusion.of([context], [bonus]))
        models = {"g0": base}
        for chain in chains:
            models[f"{chain}_g{g}"] = model_file.load(
                Path(workdir) / chain / f"g{g}" / "model.safetensors")
        for name, params in models.items():
            for mode, decoder, tag in (("beam", plain, "beam"),
                                       ("beam + biasing", biased, f"bias{g}_{bonus:g}")):
                new = outputs(f"{name}_{tag}", params, g, decoder)
                old = outputs(f"{name}_{tag}", params, 0, decoder)
                rows.append({**_row("g0 model (no update)" if name == "g0" else name, mode, g,
                                    new, old), "bias_words": len(words) if tag != "beam" else 0})
    (out_dir / "results.json").write_text(json.dumps(rows, indent=2))
    report = table(rows, bonus)
    (out_dir / "results.md").write_text(report + "\n")
    return report


def table(rows: list[dict], bonus: float) -> str:
    lines = [f"| generation | model | decoder (bonus {bonus:g}) | bias words | new-word recall "
             "| WER new test | WER g0 test |", "|---|---|---|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| g{r['generation']} | {r['model']} | {r['decoder']} | {r['bias_words']} "
                     f"| {r['new_word_recall']:.1%} ({r['recognized']}/{r['occurrences']}) "
                     f"| {r['wer_new']:.1%} | {r['wer_g0']:.1%} |")
    return "\n".join(lines)
