"""What a device model file says about the recognizer: the model, frontend and tokenizer.

Stored as JSON under the metadata key `amnet` of the safetensors model file (string values
only), next to the neural-diff fingerprint and version; an update keeps it. Written on the
server by `amnet.export` from a training run's config; read here without JAX.

    {"format": "amnet-device/1",
     "model": {TransducerConfig fields: encoder_layers, encoder_hidden, ...},
     "frontend": {FrontendConfig fields: sample_rate, win_length, ..., feature_mean, ...},
     "tokens": [the text of each token id; "" for the blank, id 0],
     "max_length": labels per utterance at most (the JAX decoders' bound)}
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from types import SimpleNamespace

import numpy as np

from amnet.amortized.costs import frame_costs
from amnet.data.text import normalize_text
from amnet.rnnt import flops

METADATA_KEY = "amnet"
FORMAT = "amnet-device/1"
WORD_BOUNDARY = "\u2581"  # sentencepiece's space marker


class SpecError(ValueError):
    """A model file whose recognizer configuration is missing or unusable."""


@dataclasses.dataclass(frozen=True)
class DeviceSpec:
    model: dict  # TransducerConfig fields
    frontend: dict  # FrontendConfig fields
    tokens: tuple[str, ...]  # id -> text ("" for the blank)
    max_length: int = 160

    def to_json(self) -> str:
        return json.dumps({"format": FORMAT, "model": self.model, "frontend": self.frontend,
                           "tokens": list(self.tokens), "max_length": self.max_length},
                          sort_keys=True)

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, str], source: str = "model") -> DeviceSpec:
        """Raises `SpecError` naming `source` when the configuration is missing or invalid."""
        if METADATA_KEY not in metadata:
            raise SpecError(f"{source} carries no recognizer configuration (metadata key "
                            f"{METADATA_KEY!r}): export it with `python -m neuraldiff.cli "
                            "export --run=<run dir>`")
        try:
            raw = json.loads(metadata[METADATA_KEY])
            if raw.get("format") != FORMAT:
                raise SpecError(f"{source}: recognizer configuration format "
                                f"{raw.get('format')!r}; this runtime reads {FORMAT!r}")
            spec = cls(dict(raw["model"]), dict(raw["frontend"]), tuple(raw["tokens"]),
                       int(raw["max_length"]))
        except SpecError:
            raise
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise SpecError(f"{source}: unreadable recognizer configuration: {e!r}") from None
        spec.check(source)
        return spec

    def check(self, source: str = "model") -> None:
        need = ("vocab_size", "input_dim", "encoder_layers", "encoder_hidden", "embed_dim",
                "predictor", "predictor_layers", "predictor_hidden", "joint_dim", "blank",
                "encoder_branches", "frame_period_s", "processor_flops")
        missing = [k for k in need if k not in self.model]
        if missing:
            raise SpecError(f"{source}: the model configuration lacks {missing}")
        if len(self.tokens) != self.model["vocab_size"]:
            raise SpecError(f"{source}: {len(self.tokens)} token texts for a vocabulary of "
                            f"{self.model['vocab_size']}")
        frontend = ("sample_rate", "win_length", "hop_length", "n_fft", "num_mels", "f_min",
                    "f_max", "log_floor", "feature_mean", "feature_std", "stack")
        missing = [k for k in frontend if k not in self.frontend]
        if missing:
            raise SpecError(f"{source}: the frontend configuration lacks {missing}")
        if self.frontend["num_mels"] * self.frontend["stack"] != self.model["input_dim"]:
            raise SpecError(f"{source}: {self.frontend['num_mels']} mels x stack "
                            f"{self.frontend['stack']} do not give the model's input_dim "
                            f"{self.model['input_dim']}")
        for spec in self.model["encoder_branches"]:
            flops.LinearSpec.parse(spec)

    @property
    def branches(self) -> tuple[flops.LinearSpec, ...]:
        return tuple(flops.LinearSpec.parse(s) for s in self.model["encoder_branches"])

    def branch_flops(self) -> np.ndarray:
        """C_k: counted FLOPs of a frame sent to each branch (`amnet.rnnt.flops`), float32."""
        return np.asarray(frame_costs(SimpleNamespace(**self.model)).per_branch,
                          np.float32)

    def encode(self, text: str) -> list[int]:
        """Normalized text -> token ids, for character vocabularies (a phrase to boost).

        Raises:
          SpecError: a wordpiece vocabulary (the device has no sentencepiece model).
        """
        if any(len(t) != 1 for t in self.tokens[1:]):
            raise SpecError("phrases can be encoded on the device for character vocabularies "
                            "only")
        ids = {t: i for i, t in enumerate(self.tokens) if i != self.model["blank"]}
        return [ids[ch] for ch in normalize_text(text)]

    def detokenize(self, ids: Sequence[int]) -> str:
        """Token ids -> text: characters as they are; wordpieces with their space marker."""
        text = "".join(self.tokens[i] for i in ids if i != self.model["blank"])
        if any(WORD_BOUNDARY in t for t in self.tokens):
            text = " ".join(text.replace(WORD_BOUNDARY, " ").split())
        return text
