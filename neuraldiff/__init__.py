"""Neural diff: small learned model updates (sparse or hashed diffs) and update packages.

Model-agnostic (any Flax params tree). Server side: `sparse` / `hashed` hold the diff
collections and `merge`; training differentiates through `merge` w.r.t. the diff only;
`updates` turns a trained diff (or, in `posthoc`, a fully fine-tuned model) into package
contents that fit a byte budget; `package.pack` encodes and signs (`signing`). Device side:
`package.decode` verifies, `model_file.apply_to_file` applies atomically; `cli` wraps both.
Formulation and byte layout: docs/neuraldiff.md.
"""
