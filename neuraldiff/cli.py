r"""Update packages from the command line: pack on the server, verify and apply on a device.

    python -m neuraldiff.cli keygen --private_key=server.pem --public_key=device.pub
    python -m neuraldiff.cli export --run=runs/demo --out=base.safetensors
    python -m neuraldiff.cli pack --base=base.safetensors --diff=diff.safetensors \
        --budget_percent=10 --signing_key=server.pem --version=1 --out=update.ndiff
    python -m neuraldiff.cli pack --base=base.safetensors --target=new.safetensors \
        --method=topk --budget_percent=5 --out=update.ndiff
    python -m neuraldiff.cli verify --package=update.ndiff --base=base.safetensors \
        --public_key=device.pub
    python -m neuraldiff.cli apply --package=update.ndiff --model=device.safetensors \
        --public_key=device.pub --require_signature

Exit status: 0 on success, 1 when a package, model or key is refused (the reason on stderr;
`apply` then leaves the model file untouched), 2 on bad arguments. `--version` is the version of
the model a package produces (default: the base model file's + 1): a device at that version or
above refuses it (no rollback).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from neuraldiff import model_file, package, signing, tree
from neuraldiff.tree import Selector

POSTHOC_METHODS = ("topk", "svd", "compressed", "full")


def _budget(args, base: dict) -> int | None:
    if args.budget_bytes is not None and args.budget_percent is not None:
        raise ValueError("give --budget_bytes or --budget_percent, not both")
    if args.budget_percent is not None:
        if not 0 < args.budget_percent <= 100:
            raise ValueError(f"--budget_percent must be in (0, 100], got {args.budget_percent}")
        from neuraldiff import updates

        return updates.budget_bytes(base, args.budget_percent / 100)
    if args.budget_bytes is not None and args.budget_bytes <= 0:
        raise ValueError(f"--budget_bytes must be positive, got {args.budget_bytes}")
    return args.budget_bytes


def _diff_contents(path: str, base: dict, budget: int | None, coding: str):
    from neuraldiff import updates

    method, collections = model_file.load_diff(path)
    unknown = sorted(set(collections["diff"]) - set(base))
    if unknown:
        raise ValueError(f"{path} has diffs for tensors the base model lacks: {unknown}")
    shapes = {n: base[n].shape for n in collections["diff"]}
    contents, _ = updates.from_diff(method, collections, shapes, coding, budget)
    return method, contents


def pack_command(args) -> None:
    # The server's modules (JAX) load here: verify and apply run on a device without them.
    from neuraldiff import posthoc, updates

    base_file = model_file.read(args.base)
    base = base_file.params
    version = base_file.version + 1 if args.version is None else args.version
    if version <= base_file.version:
        raise ValueError(f"--version={version} is not newer than {args.base}'s version "
                         f"{base_file.version}: every device would refuse the package")
    budget = _budget(args, base)
    # Contents are fitted to what the budget leaves after the note and signature.
    fit = None if budget is None else budget - package.framing_overhead(
        note=args.note, signed=bool(args.signing_key), version=version)
    if (args.diff is None) == (args.target is None):
        raise ValueError("give exactly one of --diff (a learned diff) or --target (a new model)")
    if args.diff is not None:
        method, contents = _diff_contents(args.diff, base, fit, args.coding)
    else:
        method = args.method
        target = model_file.load(args.target)
        if sorted(target) != sorted(base) or any(target[n].shape != base[n].shape for n in base):
            raise ValueError(f"{args.target} does not have the tensors and shapes of {args.base}")
        names = Selector(args.min_ndim).names(tree.unflatten(base))
        if method == "full":
            contents = posthoc.full_model(target)
        elif budget is None:
            raise ValueError(f"--method={method} needs --budget_bytes or --budget_percent")
        elif method == "topk":
            contents = posthoc.topk_delta(base, target, names, fit, args.coding)
        elif method == "svd":
            contents = posthoc.svd_delta(base, target, names, fit, args.coding)
        else:
            contents = posthoc.compressed_model(target, names, fit, "int8")
    key = signing.load_private_key(args.signing_key) if args.signing_key else None
    data, result = package.pack(method, contents, base, budget_bytes=budget, note=args.note,
                                signing_key=key, version=version)
    model_file.atomic_write(args.out, data)
    print(json.dumps({"package": args.out, "method": method, "bytes": len(data),
                      "percent_of_model": round(100 * len(data) / updates.model_bytes(base),
                                                3),
                      "signed": key is not None, "version": version,
                      "tensors": len(contents),
                      "result_fingerprint": package.fingerprint(result)}, indent=2))


def _public_key(args):
    return signing.load_public_key(args.public_key) if args.public_key else None


def verify_command(args) -> None:
    data = _read(args.package)
    pkg = package.decode(data, public_key=_public_key(args),
                         require_signature=args.require_signature)
    summary = {"package": args.package, "method": pkg.method, "bytes": pkg.size,
               "signed": pkg.signed, "version": pkg.version,
               "budget_bytes": pkg.header["budget_bytes"],
               "note": pkg.header.get("note", ""), "tensors": len(pkg.tensors),
               "base_fingerprint": pkg.base_fingerprint,
               "result_fingerprint": pkg.result_fingerprint}
    if args.base:
        base = model_file.read(args.base)
        model_file.check_version(pkg, base.version, args.base)
        package.apply(pkg, base.params)
        summary["base"] = (f"{args.base}: version {base.version}, matches, and applying gives "
                           "the result fingerprint")
    print(json.dumps(summary, indent=2))


def apply_command(args) -> None:
    pkg = model_file.apply_to_file(args.model, _read(args.package), public_key=_public_key(args),
                                   require_signature=args.require_signature, out_path=args.out)
    print(json.dumps({"model": str(args.out or args.model), "method": pkg.method,
                      "version": pkg.version, "fingerprint": pkg.result_fingerprint}, indent=2))


def keygen_command(args) -> None:
    signing.generate(args.private_key, args.public_key)
    print(f"wrote {args.private_key} (keep it on the server) and {args.public_key}")


def export_command(args) -> None:
    from amnet import export
    from amnet.training import checkpointing

    try:
        fp = export.export_run(args.run, args.out, version=args.version)
    except checkpointing.CorruptCheckpointError as e:
        raise ValueError(f"cannot export {args.run}: {e}") from None
    print(json.dumps({"model": args.out, "version": args.version, "fingerprint": fp}, indent=2))


def _read(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise ValueError(f"cannot read package {path}: {e.strerror}") from None


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m neuraldiff.cli", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)

    pk = sub.add_parser("pack", help="encode an update against a base model")
    pk.add_argument("--base", required=True, help="the model the devices have (.safetensors)")
    pk.add_argument("--diff", help="a learned diff (model_file.save_diff)")
    pk.add_argument("--target", help="the new model, for a post-hoc update")
    pk.add_argument("--method", choices=POSTHOC_METHODS, default="topk",
                    help="post-hoc method with --target")
    pk.add_argument("--budget_bytes", type=int)
    pk.add_argument("--budget_percent", type=float, help="of the base model's bytes")
    pk.add_argument("--coding", choices=("fp32", "fp16", "int8"), default="fp16")
    pk.add_argument("--min_ndim", type=int, default=2, help="post-hoc: leaves with a delta")
    pk.add_argument("--signing_key", help="Ed25519 private key (PEM)")
    pk.add_argument("--note", default="")
    pk.add_argument("--version", type=int,
                    help="the version of the model the package produces (default: the base's "
                         "+ 1; devices refuse a package not newer than their model)")
    pk.add_argument("--out", required=True)
    pk.set_defaults(handler=pack_command)

    for name, run, help_ in (("verify", verify_command, "check a package (and its base)"),
                             ("apply", apply_command, "apply a package to a model file")):
        c = sub.add_parser(name, help=help_)
        c.add_argument("--package", required=True)
        if name == "verify":
            c.add_argument("--base", help="also check that it applies to this model")
        else:
            c.add_argument("--model", required=True, help="the device's model file")
            c.add_argument("--out", help="write here instead of replacing --model")
        c.add_argument("--public_key", help="Ed25519 public key (PEM): check the signature")
        c.add_argument("--require_signature", action="store_true")
        c.set_defaults(handler=run)

    kg = sub.add_parser("keygen", help="make an Ed25519 key pair")
    kg.add_argument("--private_key", required=True)
    kg.add_argument("--public_key", required=True)
    kg.set_defaults(handler=keygen_command)

    ex = sub.add_parser("export", help="a training run's newest params as a model file")
    ex.add_argument("--run", required=True)
    ex.add_argument("--out", required=True)
    ex.add_argument("--version", type=int, default=0, help="the model's version")
    ex.set_defaults(handler=export_command)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        args.handler(args)
    except (package.PackageError, model_file.ModelFileError, signing.KeyFileError,
            ValueError, FileNotFoundError, FileExistsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
