"""The layering rule of the README, read from the imports of every module: data flows one way
(data -> rnnt -> amortized -> training -> evaluation -> device -> configs -> composition root
and studies -> entry points), and each layer imports only from itself and the layers before it."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROJECT = ("amnet", "neuraldiff", "experiments", "benchmarks", "launch")

# Lowest first. A module belongs to the first layer whose prefix names it (longest prefix wins).
LAYERS = (
    ("neuraldiff",),  # model-agnostic update machinery: imports nothing of amnet
    ("amnet.data",),
    ("amnet.rnnt",),
    ("amnet.amortized",),
    ("amnet.training",),
    ("amnet.evaluation",),
    ("amnet.device",),
    ("experiments.configs",),  # run configs: Python files returning a ConfigDict
    # The composition root (build) and what composes it: the trainer, the studies, export, and
    # the two command-line tools a device-side user runs (`amnet.transcribe`, `neuraldiff.cli`).
    ("amnet", "neuraldiff.cli"),
    ("experiments", "benchmarks", "launch"),  # thin entry points, benchmarks, launchers
)


def layer_of(module: str) -> int:
    best = None
    for index, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if module == prefix or module.startswith(prefix + "."):
                if best is None or len(prefix) > best[0]:
                    best = (len(prefix), index)
    if best is None:
        raise ValueError(f"{module} is in no layer")
    return best[1]


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_imports(path: Path) -> set[str]:
    """Modules of the project that `path` imports, at any depth (function-level included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
    return {m for m in found if m.split(".")[0] in PROJECT and _exists(m)}


def _exists(module: str) -> bool:
    path = ROOT.joinpath(*module.split("."))
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def modules():
    for package in PROJECT:
        yield from sorted((ROOT / package).rglob("*.py"))


def test_every_module_imports_only_from_its_layer_and_the_layers_before():
    violations = []
    for path in modules():
        name = module_name(path)
        own = layer_of(name)
        for imported in sorted(project_imports(path)):
            if layer_of(imported) > own:
                violations.append(f"{name} (layer {own}) imports {imported} "
                                  f"(layer {layer_of(imported)})")
    assert not violations, "\n".join(violations)


@pytest.mark.parametrize("module, imported, allowed", [
    ("amnet.rnnt.transducer", "amnet.amortized.encoder", False),
    ("amnet.training.step", "amnet.rnnt.transducer", True),
    ("neuraldiff.sparse", "amnet.rnnt.lm", False),
    ("neuraldiff.cli", "amnet.export", True),
    ("amnet.device.recognizer", "neuraldiff.model_file", True),
])
def test_the_rule_itself(module, imported, allowed):
    assert (layer_of(imported) <= layer_of(module)) == allowed
