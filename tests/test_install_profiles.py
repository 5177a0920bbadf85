"""Install profiles: the library needs none of the extras, and a part whose extra is missing
says which extra to install. (``.ci/library_only.sh`` checks the same in a real environment
without the extras.)"""

import json
import os
import subprocess
import sys
import tomllib

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LIBRARY = ("jaxseg.losses", "jaxseg.metrics", "jaxseg.models", "jaxseg.evaluate", "jaxseg.predict",
           "jaxseg.sharding")
# Distributions of the extras, by the top-level module they install.
EXTRA_MODULES = ("tensorflow", "tensorflow_datasets", "scipy", "PIL", "matplotlib", "torch",
                 "ml_collections", "tensorboardX", "tqdm", "safetensors")


def _run(code: str) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                        env={**os.environ, "JAX_PLATFORMS": "cpu"}, timeout=300)


def test_library_loads_no_module_of_an_extra():
  out = _run("import sys, json\n" + "".join(f"import {m}\n" for m in LIBRARY)
             + "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))")
  assert out.returncode == 0, out.stderr
  loaded = set(json.loads(out.stdout.strip().splitlines()[-1]))
  assert not loaded & set(EXTRA_MODULES), sorted(loaded & set(EXTRA_MODULES))


def test_core_dependencies_are_the_jax_stack_only():
  with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
    project = tomllib.load(f)["project"]
  names = {d.split(">")[0].split("<")[0].split("=")[0].strip().lower()
           for d in project["dependencies"]}
  assert names == {"jax", "jaxlib", "flax", "optax", "chex", "numpy"}, names
  extras = project["optional-dependencies"]
  assert {"data", "train", "all", "test"} <= set(extras)
  assert extras["all"] == ["jaxseg[data,train]"]


@pytest.mark.parametrize("module, blocked, extra", [
    ("jaxseg.data", "tensorflow", "data"),
    ("jaxseg.data", "scipy", "data"),
    ("jaxseg.training.loop", "tensorboardX", "train"),
    ("jaxseg.training.cli", "ml_collections", "train"),
    ("jaxseg.viz", "matplotlib", "train"),
])
def test_a_missing_extra_is_named(module, blocked, extra):
  """With ``blocked`` not importable (``sys.modules[name] = None``), importing ``module`` raises
  an ImportError that names the extra to install."""
  out = _run(f"import sys\nsys.modules[{blocked!r}] = None\n"
             f"try:\n  import {module}\nexcept ImportError as e:\n  print('IMPORT-ERROR', e)\n")
  assert f"pip install 'jaxseg[{extra}]'" in out.stdout, out.stdout + out.stderr
  assert blocked in out.stdout
