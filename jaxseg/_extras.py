"""Which optional dependencies (pip extras) a part of jaxseg needs, and the error when they are
missing.

``pip install jaxseg`` gives the library (losses, metrics, models, evaluation, sharding) with
jax, flax, optax, chex and NumPy only. The input pipelines need the ``data`` extra (TensorFlow,
TensorFlow Datasets, SciPy, Pillow), the trainer and figures the ``train`` extra (ml_collections,
absl, orbax, TensorBoard logging, matplotlib, ...); ``all`` is both.
"""

from __future__ import annotations

import importlib.util


def require(extra: str, feature: str, *modules: str) -> None:
  """Raises ``ImportError`` naming ``extra`` when one of ``modules`` cannot be imported.

  Only looks the modules up (``importlib.util.find_spec``), without importing them.
  """
  missing = [m for m in modules if importlib.util.find_spec(m) is None]
  if missing:
    raise ImportError(
        f"{feature} needs {', '.join(missing)}, which jaxseg's '{extra}' extra installs: "
        f"pip install 'jaxseg[{extra}]' (in a checkout: pip install -e '.[{extra}]').")
