r"""Trains a sentencepiece wordpiece model on the transcripts of a TFDS split.

    python -m experiments.build_tokenizer --dataset=librispeech --split=train_clean100 \
        --data_dir=gs://BUCKET/tensorflow_datasets --vocab_size=4096 --out=runs/wpm4k

Writes <out>.model and <out>.vocab (id 0 is the RNN-T blank; `amnet.data.text`). Reads the split
with
the project's data source (array_record, no TensorFlow); transcripts are normalized as in
training.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from absl import app, flags

from amnet.data import input_pipeline
from amnet.data.text import SentencePieceTokenizer

_DATASET = flags.DEFINE_string("dataset", "librispeech", "TFDS name (or name/config).")
_SPLIT = flags.DEFINE_string("split", "train_clean100", "Split whose transcripts train it.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS data dir.")
_VOCAB = flags.DEFINE_integer("vocab_size", 4096, "Wordpieces, the blank included.")
_OUT = flags.DEFINE_string("out", None, "Output prefix (<out>.model).", required=True)


def transcripts(dataset: str, split: str, data_dir: str | None) -> list[str]:
    source = input_pipeline.open_source(dataset, split, data_dir)
    texts = []
    for i in range(len(source)):
        text = source[i]["text"]
        texts.append(text.decode() if isinstance(text, bytes) else str(text))
    return texts


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    texts = transcripts(_DATASET.value, _SPLIT.value, _DATA_DIR.value)
    Path(_OUT.value).parent.mkdir(parents=True, exist_ok=True)
    model = SentencePieceTokenizer.train(texts, vocab_size=_VOCAB.value, model_prefix=_OUT.value)
    print(f"{model}: {_VOCAB.value} wordpieces from {len(texts)} transcripts")


if __name__ == "__main__":
    app.run(main)
