"""Global 64-bit mode for tests: set as a user's program sets it, restored afterwards."""

import contextlib

import jax


@contextlib.contextmanager
def global_x64(enabled: bool):
  """``jax.config.update("jax_enable_x64", enabled)`` inside the block, the old value after it.

  JAX keys its compilation caches on the flag, so functions jitted before are traced again."""
  old = jax.config.jax_enable_x64
  jax.config.update("jax_enable_x64", enabled)
  try:
    yield
  finally:
    jax.config.update("jax_enable_x64", old)
