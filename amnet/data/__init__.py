"""Corpus and input pipeline: the embedded spoken-commands TFDS dataset and grain batching."""
