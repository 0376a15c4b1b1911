"""One file per layer family; infer/registry.py lists them in detection order."""
