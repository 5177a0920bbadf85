"""The library's layers point down only: what importing each public module loads.

Losses, metrics, models and evaluation must import neither the trainer (``jaxseg.training``),
the input pipelines (``jaxseg.data``) nor TensorFlow, so that a user who wants a loss in their
own JAX code pays for none of them. Each import runs in a fresh interpreter.
"""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FORBIDDEN = ("jaxseg.training", "jaxseg.data", "tensorflow")


def _loaded_after_import(statement: str) -> list[str]:
  code = (f"import sys, json\n{statement}\n"
          "print(json.dumps(sorted(sys.modules)))")
  out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                       env={**os.environ, "JAX_PLATFORMS": "cpu"}, timeout=300, check=True)
  return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("module", ["jaxseg.losses", "jaxseg.metrics", "jaxseg.models",
                                    "jaxseg.evaluate", "jaxseg.sharding"])
def test_library_modules_load_no_trainer_data_or_tensorflow(module):
  loaded = _loaded_after_import(f"import {module}")
  assert module in loaded
  bad = [m for m in loaded if any(m == f or m.startswith(f + ".") for f in FORBIDDEN)]
  assert not bad, f"importing {module} loads {bad}"


def test_losses_import_nothing_else_of_jaxseg():
  """But jaxseg._validation (the input contract the losses share with the metrics; JAX and NumPy
  only) and jaxseg._files (files written whole; the standard library only)."""
  loaded = _loaded_after_import("import jaxseg.losses")
  others = [m for m in loaded if m.startswith("jaxseg.") and not m.startswith("jaxseg.losses")
            and m not in ("jaxseg._validation", "jaxseg._files")]
  assert not others, others


def test_sharded_loss_axis_is_the_mesh_axis():
  """The sharded loss names the mesh axis without importing jaxseg.sharding (layering)."""
  import inspect
  from jaxseg import sharding
  from jaxseg.losses import lovasz_softmax_all_to_all
  default = inspect.signature(lovasz_softmax_all_to_all).parameters["axis_name"].default
  assert default == sharding.DATA_AXIS


CONFIG_DIR = os.path.join(ROOT, "configs")
CONFIG_FILES = sorted(f for f in os.listdir(CONFIG_DIR)
                      if f.endswith(".py") and f not in ("__init__.py", "common.py"))


def test_reading_every_config_loads_no_tensorflow_and_no_jaxseg():
  """Configs are data: reading one (as ``train.py`` does, from its path) imports ml_collections
  and configs/common.py only."""
  paths = [os.path.join(CONFIG_DIR, f) for f in CONFIG_FILES]
  loaded = _loaded_after_import(
      "from ml_collections import config_flags\n"
      f"for p in {paths!r}:\n"
      "  config_flags.config_flags._LoadConfigModule('cfg', p).get_config()")
  bad = [m for m in loaded if m.split(".")[0] in ("tensorflow", "jaxseg", "jax", "tensorflow_datasets")]
  assert not bad, f"reading the configs loads {bad}"


@pytest.mark.parametrize("name", CONFIG_FILES + ["common.py"])
def test_configs_import_ml_collections_and_common_only(name):
  import ast
  with open(os.path.join(CONFIG_DIR, name)) as f:
    tree = ast.parse(f.read())
  imported = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      imported.update(a.name for a in node.names)
    elif isinstance(node, ast.ImportFrom):
      imported.add(node.module if node.module != "configs" else
                   "configs." + ",".join(a.name for a in node.names))
  allowed = {"__future__", "ml_collections", "ml_collections.config_dict", "configs.common"}
  assert imported <= allowed, f"configs/{name} imports {sorted(imported - allowed)}"
