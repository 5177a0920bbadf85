"""Experiments on the embedded data: the papers' findings, reproduced or measured (run from the
repository root: ``python -m experiments.<name>``)."""
