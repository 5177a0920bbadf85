"""Shared pytest configuration: CPU only, TensorFlow kept off any accelerator."""

import os
import sys

# The training configs are imported as ``configs.<name>`` from the repository root.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import jax  # noqa: E402  (after the environment above)
import pytest  # noqa: E402
from x64_mode import global_x64  # noqa: E402  (tests/ is on sys.path)


@pytest.fixture(scope="module")
def compilation_cache(tmp_path_factory):
  """Runs compile the same programs again (resumed runs, configs that differ only in their data):
  share them through JAX's persistent cache, one directory for the whole test session."""
  from jax.experimental.compilation_cache import compilation_cache as cc
  old = (jax.config.jax_compilation_cache_dir, jax.config.jax_persistent_cache_min_compile_time_secs,
         jax.config.jax_persistent_cache_min_entry_size_bytes)
  jax.config.update("jax_compilation_cache_dir", str(tmp_path_factory.getbasetemp() / "jit_cache"))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
  cc.reset_cache()  # the cache is set up once per process: make it see the new directory
  yield
  jax.config.update("jax_compilation_cache_dir", old[0])
  jax.config.update("jax_persistent_cache_min_compile_time_secs", old[1])
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", old[2])
  cc.reset_cache()


@pytest.fixture
def x64():
  """Global 64-bit mode on for one test, as a user's program sets it
  (``jax.config.update("jax_enable_x64", True)``), and restored afterwards."""
  with global_x64(True):
    yield
