"""Shared pytest configuration: CPU only, TensorFlow kept off any accelerator."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
