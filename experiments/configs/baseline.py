"""Single-encoder dense RNN-T baseline.

    python -m experiments.train --config=experiments/configs/baseline.py:small --workdir=runs/x
    ... --config.train.steps=2000 --config.model.encoder_hidden=256   (overrides)

Presets: `tiny` (tests), `small` (the demo: 2,000 steps of 32 on small_g0), `full` (the long
preset: 8,000 steps on full_g0), `librispeech` (a prepared TFDS librispeech in array_record).
The recipe (CMVN, CTC head, blank bias, per-token loss, fitted buckets, LM fusion) and the runs
behind each choice: docs/rnnt.md.
"""

import ml_collections
from ml_collections import config_dict


def get_config(preset: str = "small") -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.preset = preset
    c.seed = 0

    c.data = ml_collections.ConfigDict()
    c.data.name = "spoken_commands/small_g0"  # TFDS name/config; the embedded corpus builds itself
    c.data.data_dir = config_dict.placeholder(str)  # None: TFDS's default
    c.data.train_split = "train"
    c.data.eval_split = "validation"
    c.data.test_split = "test"
    c.data.tokenizer = "char"  # or a sentencepiece model path
    # (samples, tokens), fitted to small_g0 train (docs/rnnt.md, the recipe): 80% of encoder
    # frames and 70% of lattice cells of the old 3 buckets' cost; the last catches the rest
    # and costs a compilation only if an example needs it.
    c.data.buckets = ((29_000, 40), (36_000, 56), (45_000, 64), (57_000, 80), (75_000, 80),
                      (96_000, 88), (160_000, 160))
    # Speed perturbation of the training split (amnet.data.speed_perturbation): each example
    # once per factor and epoch; (0.9, 1.0, 1.1) triples an epoch.
    c.data.speed_factors = (1.0,)
    c.data.bad_example_policy = "error"  # or "skip": bad examples are counted and left out
    c.data.max_bad_share = 0.05  # with "skip": more bad examples than this share stop the run
    c.data.num_threads = 2
    c.data.prefetch_batches = 4

    c.frontend = ml_collections.ConfigDict()
    c.frontend.num_mels = 80
    c.frontend.stack = 3
    # Per-channel global CMVN, statistics from `cmvn_utterances` training utterances, stored in
    # the run's config (amnet.rnnt.cmvn); "global" uses the scalars feature_mean / feature_std.
    c.frontend.normalization = "cmvn"
    c.frontend.cmvn_utterances = 2000
    c.frontend.cmvn_mean = config_dict.placeholder(list)
    c.frontend.cmvn_std = config_dict.placeholder(list)
    c.frontend.feature_mean = 0.0
    c.frontend.feature_std = 1.0
    c.frontend.spec_augment = True
    c.frontend.num_freq_masks = 2
    c.frontend.max_freq_width = 15
    c.frontend.num_time_masks = 2
    c.frontend.max_time_ratio = 0.05

    c.model = ml_collections.ConfigDict()
    c.model.encoder_layers = 3
    c.model.encoder_hidden = 256
    c.model.encoder_projection = config_dict.placeholder(int)
    c.model.embed_dim = 64
    c.model.predictor = "lstm"  # or "stateless" (amnet.rnnt.predictor)
    c.model.predictor_context = 2  # labels a stateless predictor sees
    c.model.predictor_layers = 1
    c.model.predictor_hidden = 256
    c.model.joint_dim = 256
    c.model.ctc_head = True  # the auxiliary CTC loss on the encoder (amnet.rnnt.ctc)
    # Without it the CMVN model learns to emit the transcript at the first frames from the
    # prediction network alone (docs/rnnt.md, the recipe).
    c.model.blank_bias_init = 3.0
    c.model.dtype = "float32"  # "bfloat16": bf16 matmuls, fp32 params and loss
    c.model.loss_frames_per_chunk = 1  # 1 on CPU; 5-10 on GPU/TPU (docs/rnnt.md)
    # "pruned" (amnet.rnnt.pruned_loss): the full joint on prune_range tokens per frame, chosen by a
    # simple joint; 1.4x the steps of the exact "fused" loss in the same time (docs/rnnt.md).
    c.model.loss = "pruned"
    c.model.prune_range = 5
    # The LSTMs' backward pass: "hand_written" (amnet.rnnt.lstm_recurrence) or "autodiff" of the
    # plain scan (the same gradients; benchmarks.run measures both).
    c.model.lstm_backward = "hand_written"

    c.loss = ml_collections.ConfigDict()
    c.loss.ctc_weight = 0.3  # L = (1 - w) L_rnnt + w L_ctc (amnet.rnnt.objective)
    c.loss.ctc_only_steps = 0  # CTC alone for the first steps (an encoder warm-up)
    c.loss.normalization = "token"  # summed loss / target tokens of the batch
    c.loss.simple_scale = 0.5  # pruned loss: weight of the simple joint's loss after warm-up
    c.loss.pruned_warmup_steps = 200  # pruned loss: its weight ramps 0.1 -> 1 over these

    c.optimizer = ml_collections.ConfigDict()
    c.optimizer.learning_rate = 5e-3  # 1.5e-3: 50% validation WER at 1,000 steps, 3e-3: 33%
    c.optimizer.warmup_steps = 200
    c.optimizer.end_ratio = 0.05
    c.optimizer.b1 = 0.9
    c.optimizer.b2 = 0.98
    c.optimizer.weight_decay = 1e-6
    c.optimizer.clip_norm = 5.0

    c.train = ml_collections.ConfigDict()
    c.train.steps = 2000
    c.train.global_batch_size = 32  # utterances per step over all devices
    c.train.per_device_batch_size = -1  # if > 0: global = per_device x devices (set one of them)
    c.train.num_devices = -1  # -1: every device of every process
    c.train.log_every = 25
    c.train.eval_every = 400  # step 400: the probes of docs/rnnt.md
    c.train.eval_batches = -1  # validation batches per periodic eval (-1: all)
    c.train.checkpoint_every = 200
    c.train.keep_checkpoints = 3
    c.train.keep_best = 1
    c.train.max_nonfinite_steps = 5  # consecutive non-finite steps (each skipped) that stop the run

    # Shallow fusion in beam search (amnet.rnnt.lm, amnet.rnnt.decoding): a character n-gram LM of
    # the
    # training transcripts, built into the run dir; weights chosen on the validation split.
    c.lm = ml_collections.ConfigDict()
    c.lm.order = 6
    c.lm.weight = 0.15
    c.lm.length_bonus = 0.5  # per emitted label, against the LM's pull to short outputs
    c.lm.lexicon = False  # also constrain words to those of the training transcripts
    c.lm.lexicon_weight = 1.0
    c.lm.beam = 8

    c.eval = ml_collections.ConfigDict()
    c.eval.batch_size = 32
    c.eval.beam = 4
    c.eval.max_symbols_per_frame = 5
    c.eval.max_length = 160
    # Test-split decoders of a finished run (amnet.trainer.TEST_DECODERS; None: all).
    c.eval.test_decoders = ml_collections.config_dict.placeholder(tuple)

    if preset == "tiny":
        c.data.name = "spoken_commands/tiny_g0"
        # One bucket, one program to compile per decoder (tests' runs); it holds the tiny
        # corpus's longest utterance (4.8 s, 67 characters) with a margin.
        c.data.buckets = ((80_000, 72),)
        c.frontend.cmvn_utterances = 64
        # Large enough to learn from the audio in 300 steps (tests/training/test_train.py's probe).
        c.model.update(encoder_layers=1, encoder_hidden=64, embed_dim=16, predictor_hidden=64,
                       joint_dim=64, loss="fused")  # the tests' reference: the exact loss
        c.optimizer.warmup_steps = 5
        c.optimizer.learning_rate = 3e-3
        c.train.update(steps=300, global_batch_size=8, log_every=25, eval_every=150,
                       checkpoint_every=100, eval_batches=-1)
        c.eval.update(batch_size=8, beam=2, max_length=96)
        c.lm.update(order=4, beam=2)
    elif preset == "full":
        c.data.name = "spoken_commands/full_g0"
        # The long preset: the small model on twice the data for 5.3x the steps (21 epochs of
        # 12,000 utterances; 67 min of training on a 2-core CPU: docs/results.md).
        # Periodic validation on 10 batches (320 utterances, as small's split) keeps it cheap.
        # The exact loss: 10,000 pruned steps with speed perturbation in the same time ended
        # 1 point worse on test (docs/results.md).
        c.model.loss = "fused"
        c.optimizer.update(warmup_steps=300)
        c.train.update(steps=8000, eval_every=1000, eval_batches=10, checkpoint_every=500)
    elif preset == "librispeech":
        c.data.name = "librispeech"
        c.data.train_split = "train_clean100"
        c.data.eval_split = "dev_clean"
        c.data.test_split = "test_clean"
        c.data.buckets = ((160_000, 256), (320_000, 448), (560_000, 640))
        c.model.update(encoder_layers=5, encoder_hidden=1024, encoder_projection=640,
                       embed_dim=256, predictor_layers=2, predictor_hidden=1024, joint_dim=640,
                       dtype="bfloat16", loss_frames_per_chunk=8)
        c.optimizer.update(learning_rate=1e-3, warmup_steps=5000)
        c.train.update(steps=200_000, global_batch_size=512, eval_every=5000,
                       checkpoint_every=2500)
        c.eval.update(batch_size=128, beam=8, max_length=640)
    elif preset != "small":
        raise ValueError(f"unknown preset {preset!r}; choose tiny, small, full or librispeech")
    return c
