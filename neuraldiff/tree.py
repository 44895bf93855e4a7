"""Flat views of a Flax variables tree, and which leaves carry a diff.

A model's parameters are a nested dict of arrays. Everything in `neuraldiff` addresses a leaf by
its '/'-joined path (`encoder/branch_0/layers_0/input_kernel`), the name it has in update
packages and model files.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any

Tree = Any  # nested dict of arrays
SEPARATOR = "/"


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': x}} -> {'a/b': x}, in sorted key order."""
    flat = {}
    for key in sorted(tree):
        if not isinstance(key, str) or not key or SEPARATOR in key:
            raise ValueError(f"parameter key {key!r} under {prefix or 'the root'!r} cannot be "
                             f"named: keys must be non-empty strings without {SEPARATOR!r}")
        value = tree[key]
        name = f"{prefix}{SEPARATOR}{key}" if prefix else key
        if isinstance(value, Mapping):
            flat.update(flatten(value, name))
        else:
            flat[name] = value
    return flat


def unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
    """{'a/b': x} -> {'a': {'b': x}}."""
    tree: dict[str, Any] = {}
    for name, value in flat.items():
        *parents, leaf = name.split(SEPARATOR)
        node = tree
        for key in parents:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise ValueError(f"{name!r} nests under a leaf")
        if leaf in node:
            raise ValueError(f"{name!r} names a subtree or is given twice")
        node[leaf] = value
    return tree


@dataclasses.dataclass(frozen=True)
class Selector:
    """Which leaves carry a diff.

    Default: every leaf with at least two dimensions (kernels, embedding tables); biases and
    norm scales (1-D) only with `min_ndim=1`. `include`/`exclude` are regular expressions
    matched (re.search) against the leaf's path.
    """

    min_ndim: int = 2
    include: str | None = None
    exclude: str | None = None

    def __call__(self, name: str, array: Any) -> bool:
        if len(array.shape) < self.min_ndim:
            return False
        if self.include is not None and not re.search(self.include, name):
            return False
        return self.exclude is None or not re.search(self.exclude, name)

    def names(self, params: Mapping[str, Any]) -> list[str]:
        """Selected leaf names of `params`, sorted; at least one."""
        names = [n for n, a in flatten(params).items() if self(n, a)]
        if not names:
            raise ValueError(f"{self} selects no parameter")
        return names
