"""absl-flag experiment entry points and their ml_collections configs."""
