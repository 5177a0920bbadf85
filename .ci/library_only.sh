#!/usr/bin/env bash
# The library as a JAX user installs it: `pip install .` (no extras) in a fresh virtual
# environment of the given Python, plus pytest and hypothesis. Checks that no TensorFlow came
# with it, that the losses import and give a value and a gradient, that the input pipelines name
# the extra they need, and runs the Lovász and classic-loss tests.
# Usage: bash .ci/library_only.sh <python executable>
set -euo pipefail
cd "$(dirname "$0")/.."
python_exe="$1"
venv="$(mktemp -d)/venv"
"$python_exe" -m venv "$venv"
log="$(dirname "$venv")/pip.log"
if ! { "$venv/bin/python" -m pip install --upgrade pip &&
       "$venv/bin/python" -m pip install . "pytest>=8,<10" "hypothesis>=6.100,<7"; } >"$log" 2>&1; then
  cat "$log"
  exit 1
fi
echo "library-only install on $("$venv/bin/python" --version)"
# Outside the checkout, so that the installed package is the one imported.
(cd "$(dirname "$venv")" && "$venv/bin/python" - <<'PY'
import importlib.util
for heavy in ("tensorflow", "tensorflow_datasets", "torch", "matplotlib", "ml_collections"):
  assert importlib.util.find_spec(heavy) is None, f"pip install . installed {heavy}"
import jax
import jax.numpy as jnp
import jaxseg.evaluate, jaxseg.metrics, jaxseg.models, jaxseg.predict, jaxseg.sharding  # noqa: F401
from jaxseg.losses import lovasz_softmax
logits = jax.random.normal(jax.random.key(0), (2, 8, 8, 3))
labels = jax.random.randint(jax.random.key(1), (2, 8, 8), 0, 3)
value, grad = jax.value_and_grad(lovasz_softmax)(logits, labels)
assert jnp.isfinite(value) and grad.shape == logits.shape and bool(jnp.all(jnp.isfinite(grad)))
for module, extra in (("jaxseg.data", "data"), ("jaxseg.training", "train")):
  try:
    importlib.import_module(module)
  except ImportError as e:
    assert f"jaxseg[{extra}]" in str(e), e
  else:
    raise AssertionError(f"{module} imported without its extra")
print(f"library OK: lovasz_softmax = {float(value):.4f}, finite gradient; the extras are named")
PY
)
"$venv/bin/python" -m pytest -q -p no:cacheprovider tests/test_lovasz.py tests/test_classic_losses.py
rm -rf "$(dirname "$venv")"
