"""LibriSpeech at the papers' scale: an LSTM RNN-T with wordpieces.

    python -m experiments.build_tokenizer --dataset=librispeech --split=train_clean100 \
        --data_dir=gs://BUCKET/tensorflow_datasets --vocab_size=4096 --out=runs/wpm4k
    python -m experiments.train --config=experiments/configs/librispeech.py \
        --config.data.data_dir=gs://BUCKET/tensorflow_datasets \
        --config.data.tokenizer=runs/wpm4k.model --workdir=runs/librispeech

Model (as in the AmNet and neural-diff papers' LSTM transducers): 5 x 1024 LSTM encoder with a
640 projection per layer, 2 x 1024 LSTM prediction network, joint 640, 4,096 wordpieces, bf16
matmuls; frames stacked x3 (30 ms). Data: TFDS `librispeech` prepared as array_record
(docs/data.md), train_clean100 / dev_clean / test_clean; a multi-host slice is the intended
hardware (docs/launch.md).

`get_config("tiny")` is the same recipe, model and buckets shrunk, for a test on a small fake
dataset with LibriSpeech's feature spec (`tests/test_librispeech_config.py`).
"""

import ml_collections
from ml_collections import config_dict

from experiments.configs import baseline


def get_config(preset: str = "full") -> ml_collections.ConfigDict:
    c = baseline.get_config("librispeech")
    c.preset = preset
    c.data.tokenizer = config_dict.placeholder(str)  # a sentencepiece .model (build_tokenizer)
    c.data.vocab_size = 4096  # what build_tokenizer should make; checked against the model
    c.frontend.spec_augment = True
    # The LM of `amnet.rnnt.lm` is a dense [contexts, vocabulary] table: right for characters, far
    # too large for 4,096 wordpieces; this recipe decodes without shallow fusion.
    del c["lm"]
    if preset == "tiny":
        c.data.name = "fake_librispeech"
        c.data.buckets = ((96_000, 128),)  # one program to compile per decoder
        c.data.vocab_size = 48
        c.model.update(encoder_layers=2, encoder_hidden=32, encoder_projection=16, embed_dim=8,
                       predictor_layers=1, predictor_hidden=32, joint_dim=16, dtype="float32",
                       loss_frames_per_chunk=1)
        c.optimizer.update(learning_rate=3e-3, warmup_steps=2)
        c.train.update(steps=6, global_batch_size=4, log_every=2, eval_every=6,
                       checkpoint_every=3, eval_batches=1)
        c.eval.update(batch_size=4, beam=2, max_length=48)
    elif preset != "full":
        raise ValueError(f"unknown preset {preset!r}; choose full or tiny")
    return c
