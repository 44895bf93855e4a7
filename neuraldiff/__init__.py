"""Neural diff: small learned model updates (sparse or hashed diffs) and update packages."""
