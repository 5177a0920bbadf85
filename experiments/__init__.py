"""Experiments that reproduce figures of the papers jaxseg implements (run from the repository root)."""
