r"""The main job on the embedded corpus (`make demo`).

Today: builds the `small` corpus (generation g0 for training, g1 for the first update) and
prints its statistics, then shows one batch from the input pipeline and the frontend's output
shapes. Later stages (training, AmNet, neural diff) extend this script.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import jax
import numpy as np
from absl import app, flags, logging

from amnet import frontend
from amnet.data import corpus_report, input_pipeline, spoken_commands
from amnet.text import CharTokenizer

_DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS data dir (default: TFDS's own).")
_SIZE = flags.DEFINE_enum("size", "small", sorted(spoken_commands.SIZES), "Corpus size.")


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.WARNING)
    start = time.perf_counter()
    print(corpus_report.build_and_describe(_SIZE.value, [0, 1], _DATA_DIR.value))
    print(f"\ncorpus ready in {time.perf_counter() - start:.0f} s")

    tokenizer = CharTokenizer()
    config = input_pipeline.PipelineConfig(global_batch_size=16, num_epochs=1)
    source = input_pipeline.open_source(f"spoken_commands/{_SIZE.value}_g0", "train",
                                        _DATA_DIR.value)
    report = input_pipeline.scan(source, tokenizer, config)
    plan = input_pipeline.BatchPlan(report, config)
    batch = next(iter(input_pipeline.make_dataset(source, tokenizer, report, config)))
    features, lengths = jax.jit(frontend.featurize)(batch["audio"], batch["audio_lengths"])
    used = batch["audio_lengths"].sum() / batch["audio"].size
    print(f"\ninput pipeline: {len(report.indices)} usable of {report.total} training examples "
          f"({report.num_bad} skipped), {plan.batches_per_epoch} batches/epoch over buckets "
          f"{list(config.buckets)}")
    print(f"first batch: audio {batch['audio'].shape} ({used:.0%} real samples), "
          f"tokens {batch['tokens'].shape} -> encoder features {features.shape}, "
          f"frames {np.asarray(lengths).tolist()}")
    print(f"  {batch['ids'][0]}: {tokenizer.decode(batch['tokens'][0])!r}")


if __name__ == "__main__":
    app.run(main)
