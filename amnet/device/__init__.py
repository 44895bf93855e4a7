"""The device runtime: streaming recognition from a model file with NumPy and SciPy alone.

Nothing here imports JAX or Flax (a test checks it): a device holds the safetensors model file
that `neuraldiff.cli export` writes and `neuraldiff.cli apply` updates, whose metadata carries
the recognizer's configuration (`spec`), and runs it frame by frame:

    spec        what the model file says about the model, frontend and tokenizer
    features    log-mel features as the JAX frontend computes them, whole or streaming
    kernels     dense, sparse (CSR) and low-rank linear maps
    network     the encoder (AmNet: only the chosen branch runs), prediction network, joint
    search      greedy and beam search (+ shallow fusion), as `amnet.rnnt.decoding` does it
    recognizer  `Recognizer.load(path)`, `transcribe(audio)`, `stream()`

Formulation and figures: docs/device.md.
"""
