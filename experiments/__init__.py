"""Experiments: one module per paper figure (see figures/README.md). Populated by the experiments issue."""
