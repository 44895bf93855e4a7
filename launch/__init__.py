"""Job launchers for Cloud TPU VMs and multi-host GPU clusters (dry-run testable)."""
