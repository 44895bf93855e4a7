"""Installable package for on-device speech recognition research (AmNet, neural diff)."""

from setuptools import find_packages, setup

# Ranges are the ones this project was tested with (see README "Tested versions").
INSTALL_REQUIRES = [
    "jax>=0.10,<0.13",
    "flax>=0.12,<0.13",
    "optax>=0.2.6,<0.3",
    "orbax-checkpoint>=0.12,<0.13",
    "tensorflow-datasets>=4.9.9,<4.10",
    "array-record>=0.8,<0.9",
    "importlib-resources>=6,<8",  # needed by TFDS to locate a builder defined in a package
    "grain>=0.2.15,<0.3",
    "absl-py>=2.1,<3",
    "ml-collections>=1.1,<2",
    "jiwer>=4,<5",
    "espeakng-loader>=0.2.4,<0.3",
    "numpy>=2.1,<3",
    "scipy>=1.14,<2",
    "sentencepiece>=0.2,<0.3",
    "tqdm>=4.66,<5",
    "tensorboardX>=2.6,<3",  # TensorBoard event files without TensorFlow
    "matplotlib>=3.8,<4",  # AmNet plots
    "safetensors>=0.4,<1",  # model files on the device (neural diff), no pickle
    "cryptography>=42,<47",  # Ed25519 signatures of update packages
    "zstandard>=0.22,<1",  # the zstd --patch-from baseline of the neural-diff experiment
]

EXTRAS_REQUIRE = {
    "dev": [
        "pytest>=8,<10",
        "pytest-xdist>=3.6,<4",  # make test runs on both cores (-n 2)
        "hypothesis>=6.100,<7",
        "ruff>=0.6,<1",
        "librosa>=0.11,<2",  # independent reference for the log-mel frontend tests
        "torch==2.13.0",  # the PyTorch-baseline parity tests run in `make test` (CPU build)
        "onnx==1.23.2",  # the ONNX export tests (amnet.device.onnx_model)
        "onnxruntime==1.32.0",
        "sherpa-onnx==2.0.1",  # the sherpa-onnx layout tests run its own recognizer
        "kaldi-native-fbank==1.23.0",  # the fbank sherpa-onnx computes (amnet.device.sherpa_layout)
    ],
    "tf": ["tensorflow-cpu>=2.16,<3"],  # TFRecord datasets such as the public librispeech
    "torch": ["torch==2.13.0"],  # PyTorch baselines (CPU build)
    "onnx": ["onnx==1.23.2", "onnxruntime==1.32.0"],  # ONNX export and onnxruntime
    "sherpa": ["onnx==1.23.2", "onnxruntime==1.32.0", "sherpa-onnx==2.0.1",
               "kaldi-native-fbank==1.23.0"],  # the sherpa-onnx layout and its recognizer
}

setup(
    name="amnet-neuraldiff",
    version="0.1.0",
    description="JAX/Flax on-device ASR: amortized RNN-T encoders (AmNet) and neural-diff updates",
    python_requires=">=3.11",
    packages=find_packages(include=["amnet*", "neuraldiff*", "experiments*", "launch*"]),
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS_REQUIRE,
)
