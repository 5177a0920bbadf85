"""Import PyTorch-format weights (torchvision key names) into the Flax models.

Entry points::

    state = load_state_dict("resnet101.pth")          # or .safetensors / .npz; {key: np.ndarray}
    variables = model.init(rng, images, train=False)
    variables = import_torch_state_dict(variables, state)   # backbone of a DeepLab model
    # Caffe-converted DeepLab-v2 weights (res2a_branch2a, bn2a_branch2a, scale2a_branch2a, ...):
    variables = import_torch_state_dict(variables, state, key_map="caffe_resnet")

``.pth``/``.pt``/``.bin`` files are read with ``torch.load(..., weights_only=True)`` (torch must be
installed); ``.safetensors`` files with the ``safetensors`` package (no torch needed); ``.npz``
with NumPy. A checkpoint dict holding the weights under ``state_dict`` or ``model`` is unwrapped,
and a ``module.`` prefix (``DataParallel``) is stripped.

Input normalisation: torchvision's ImageNet weights expect RGB images normalised with mean
``(0.485, 0.456, 0.406) * 255`` and std ``(0.229, 0.224, 0.225) * 255``; Caffe ResNets (DeepLab-v2)
expect **BGR** images minus the mean ``(104.008, 116.669, 122.675)`` (BGR order) with std 1, so
flip the channels of the normalised image (``images[..., ::-1]``) or permute ``conv1``'s input
channels (``w[:, ::-1]``) when importing such weights into an RGB pipeline.

Key mapping (torchvision -> Flax)
---------------------------------
A key ``a.b.0.c.weight`` names the module path ``a``, ``b.0``, ``c``; a numeric component is
joined to the preceding name with ``_`` (torchvision's ``layer1.0`` and ``downsample.1`` are the
Flax modules ``layer1_0`` and ``downsample_1``; VGG's ``features.28`` is ``features_28``), and the
path is looked up under ``target`` (``"backbone"`` for the DeepLab models, the top level for FCN):

==========================  ===================================================================
``<m>.weight`` (conv)       ``params/<m>/kernel`` = ``w.transpose(2, 3, 1, 0)`` (``[O, I, kh, kw]``
                            -> ``[kh, kw, I, O]``)
``<m>.weight`` (linear)     reshaped to the target kernel: ``w.reshape(O, I, kh, kw)`` then as a
                            conv (VGG's ``classifier.0`` [4096, 25088] -> fc6 ``[7, 7, 512, 4096]``;
                            PyTorch flattens ``C, H, W``)
``<m>.weight`` (BatchNorm)  ``params/<m>/scale``
``<m>.bias``                ``params/<m>/bias``
``<m>.running_mean/var``    ``batch_stats/<m>/mean`` / ``var``
``num_batches_tracked``     ignored
==========================  ===================================================================

Keys of modules that the model does not have (torchvision's ``fc.*``, VGG's ``classifier.6.*``,
the ``aux_classifier.*`` of a segmentation network imported into a model without ``aux_head``)
are reported as unused (in the report, and in one printed line); with ``strict=True`` (default)
any unused key other than these, any shape mismatch, or any parameter/statistic under ``target``
that received no value raises a ``ValueError`` naming the keys.

torchvision segmentation networks
---------------------------------
A state dict of torchvision's ``deeplabv3_resnet50/101`` or ``fcn_resnet50/101`` (keys
``backbone.*``, ``classifier.*``, ``aux_classifier.*``) imports whole into the models of
:mod:`jaxseg.models.torchvision_seg`: when its keys start with ``backbone.`` the target is the
whole model (``classifier.0.convs.1.0.weight`` -> ``params/classifier_0/convs_1_0/kernel``),
otherwise (an ImageNet ResNet, ``conv1.weight``, ...) the model's ``backbone``. The classifiers
(``reinit_classifiers``: ``classifier.4`` and ``aux_classifier.4``, the last 1x1 convolutions)
may predict another number of classes than the model (torchvision's 21 VOC classes, a model
for Cityscapes' 19): their weight and bias then keep the model's initial values, with a printed
message, and are listed under ``reinitialised`` in the report. ::

    model = models.create("deeplabv3_resnet101", num_classes=21, aux_head=True)
    variables = models.init_variables(model, seed=0, image_shape=(1, 64, 64, 3))  # any size
    variables = models.import_torch_state_dict(variables, "deeplabv3_resnet101_coco-586e9e4e.pth")

:func:`export_torch_state_dict` is the inverse (Flax variables -> torchvision keys and layouts),
e.g. to load fine-tuned weights back into torchvision's module.

Caffe ResNets (DeepLab-v2)
--------------------------
The MSRA/DeepLab Caffe ResNet-101 puts the stride of each stage's first block in its first 1x1
convolution: build the model with ``stride_in_1x1=True`` (the default of the ``deeplabv2_*``
models). Its layers are named after the stage (2..5 = torchvision ``layer1..layer4``) and block
letter (``a, b, c, ...``; ResNet-101/152 number the later blocks ``b1, b2, ..., b22``):

=================================  ==========================================================
Caffe layer                        torchvision / Flax module
=================================  ==========================================================
``conv1``                          ``conv1``
``bn_conv1``, ``scale_conv1``      ``bn1``
``res{S}{B}_branch1``              ``layer{S-1}.{n}.downsample.0``
``bn{S}{B}_branch1``, ``scale...`` ``layer{S-1}.{n}.downsample.1``
``res{S}{B}_branch2a/2b/2c``       ``layer{S-1}.{n}.conv1/conv2/conv3``
``bn{S}{B}_branch2a/2b/2c``,       ``layer{S-1}.{n}.bn1/bn2/bn3``
``scale{S}{B}_branch2a/2b/2c``
``fc1000``                         ``fc`` (unused)
=================================  ==========================================================

with ``n = 0`` for ``a``, ``1`` for ``b``, ... and ``n = k`` for ``b{k}``. The parameter suffix
can be PyTorch's (``.weight``, ``.bias``, ``.running_mean``, ``.running_var``) or the Caffe blob
index: conv ``.0`` = weight (``.1`` = bias); Caffe ``BatchNorm`` ``.0`` = mean x s, ``.1`` =
variance x s, ``.2`` = s (the moving-average normaliser; mean and variance are divided by it);
``Scale`` ``.0`` = gamma (BatchNorm weight), ``.1`` = beta (bias). :func:`caffe_resnet_key_map`
performs this renaming; pass ``key_map="caffe_resnet"``. Caffe's BatchNorm epsilon is 1e-5, the
models' default ``bn_epsilon``. One architectural difference remains: Caffe's stem max-pool runs
in ceil mode without padding, so on some input sizes the feature maps differ by a pixel from
torchvision's padded pool used here; the weights are unaffected.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

_SKIP_SUFFIXES = ("num_batches_tracked",)
# FCN-8s layers that VGG-16 does not have (left at their initial values on import).
FCN_HEAD_MODULES = ("score_fr", "score_pool4", "score_pool3", "upscore2", "upscore_pool4")


def _to_numpy(value) -> np.ndarray:
    if hasattr(value, "detach"):  # torch.Tensor
        value = value.detach().cpu()
        if value.is_floating_point():
            value = value.float()
        return value.numpy()
    return np.asarray(value)


def load_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a PyTorch-format state dict from ``.pth``/``.pt``/``.bin`` (through torch),
    ``.safetensors`` (through safetensors, no torch needed) or ``.npz``; returns NumPy arrays."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no weight file at {path!r}")
    ext = os.path.splitext(path)[1].lower()
    if ext == ".safetensors":
        from safetensors.numpy import load_file

        raw: Mapping[str, Any] = load_file(path)
    elif ext == ".npz":
        with np.load(path) as data:
            raw = {k: data[k] for k in data.files}
    elif ext in (".pth", ".pt", ".bin", ".ckpt"):
        try:
            import torch
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise ImportError(
                f"reading {path!r} needs PyTorch; install torch or convert the file to .safetensors"
            ) from e
        raw = torch.load(path, map_location="cpu", weights_only=True)
    else:
        raise ValueError(f"unknown weight file type {ext!r} for {path!r} (.pth, .pt, .bin, .safetensors, .npz)")
    for wrapper in ("state_dict", "model"):
        if isinstance(raw, Mapping) and wrapper in raw and isinstance(raw[wrapper], Mapping):
            raw = raw[wrapper]
    if not isinstance(raw, Mapping):
        raise ValueError(f"{path!r} does not hold a state dict (got {type(raw).__name__})")
    out = {}
    for key, value in raw.items():
        key = key[len("module."):] if key.startswith("module.") else key
        out[key] = _to_numpy(value)
    return out


_CAFFE_RE = re.compile(r"^(res|bn|scale)(\d)([a-z])(\d*)_branch(1|2a|2b|2c)$")


def _caffe_block(letter: str, number: str) -> int:
    if number:
        if letter != "b":
            raise ValueError(f"unexpected Caffe block name {letter}{number}")
        return int(number)
    return ord(letter) - ord("a")


def caffe_resnet_key_map(state_dict: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Rename a Caffe-converted ResNet state dict to torchvision keys (see the module docstring).

    Keys that already follow torchvision names pass through unchanged; ``fc1000`` becomes ``fc``.
    Caffe BatchNorm blobs (``.0`` mean x s, ``.1`` var x s, ``.2`` s) are divided by ``s``.
    """
    out: dict[str, np.ndarray] = {}
    bn_factor: dict[str, float] = {}
    pending: list[tuple[str, str, np.ndarray]] = []
    for key, value in state_dict.items():
        layer, _, suffix = key.rpartition(".")
        if not layer:
            raise ValueError(f"state-dict key {key!r} has no parameter suffix")
        kind, module = None, None
        if layer == "conv1":
            kind, module = "res", "conv1"
        elif layer in ("bn_conv1", "scale_conv1"):
            kind, module = layer.split("_")[0], "bn1"
        elif layer == "fc1000":
            kind, module = "fc", "fc"
        else:
            m = _CAFFE_RE.match(layer)
            if m:
                kind, stage, letter, number, branch = m.groups()
                s = int(stage) - 1
                if not 1 <= s <= 4:
                    raise ValueError(f"Caffe ResNet stage {stage} in {key!r} is not 2..5")
                base = f"layer{s}.{_caffe_block(letter, number)}"
                if branch == "1":
                    module = f"{base}.downsample.{0 if kind == 'res' else 1}"
                else:
                    idx = {"2a": 1, "2b": 2, "2c": 3}[branch]
                    module = f"{base}.{'conv' if kind == 'res' else 'bn'}{idx}"
        if module is None:
            out[key] = value  # torchvision name already
            continue
        if suffix.isdigit():
            blob = int(suffix)
            if kind in ("res", "fc"):
                suffix = ("weight", "bias")[blob]
            elif kind == "scale":
                suffix = ("weight", "bias")[blob]
            else:  # Caffe BatchNorm: mean*s, var*s, s
                if blob == 2:
                    bn_factor[module] = float(np.asarray(value).reshape(-1)[0])
                    continue
                suffix = ("running_mean", "running_var")[blob]
                pending.append((module, suffix, value))
                continue
        out[f"{module}.{suffix}"] = value
    for module, suffix, value in pending:
        s = bn_factor.get(module, 1.0)
        scale = 0.0 if s == 0 else 1.0 / s
        out[f"{module}.{suffix}"] = np.asarray(value, np.float32) * scale
    return out


def _flax_path(module_key: str) -> tuple[str, ...]:
    parts = module_key.split(".")
    path: list[str] = []
    for p in parts:
        if p.isdigit() and path:
            path[-1] = f"{path[-1]}_{p}"
        else:
            path.append(p)
    return tuple(path)


def _get(tree, path):
    for p in path:
        if not isinstance(tree, Mapping) or p not in tree:
            return None
        tree = tree[p]
    return tree


def _to_plain(tree):
    if isinstance(tree, Mapping):
        return {k: _to_plain(v) for k, v in tree.items()}
    return tree


def _leaves(tree, prefix=()):
    if isinstance(tree, Mapping):
        for k, v in tree.items():
            yield from _leaves(v, prefix + (k,))
    else:
        yield prefix, tree


# The last layers of torchvision's segmentation heads: their class count may differ.
TORCHVISION_CLASSIFIERS = ("classifier.4", "aux_classifier.4")


def import_torch_state_dict(
    variables: Mapping[str, Any],
    state_dict: Mapping[str, Any] | str | os.PathLike,
    *,
    target: str | None = None,
    key_map: str | Callable[[Mapping[str, np.ndarray]], Mapping[str, np.ndarray]] | None = None,
    strict: bool = True,
    ignore_prefixes: tuple[str, ...] = ("fc.", "classifier.6.", "aux_classifier."),
    new_modules: tuple[str, ...] = FCN_HEAD_MODULES,
    reinit_classifiers: tuple[str, ...] = TORCHVISION_CLASSIFIERS,
    verbose: bool = True,
    return_report: bool = False,
):
    """Copy PyTorch-format weights into Flax ``variables`` (``{"params", "batch_stats"}``).

    Args:
      variables: the model's variables (from ``model.init`` or ``jax.eval_shape``-free init).
      state_dict: ``{key: tensor/array}`` with torchvision names, or a path for
        :func:`load_state_dict`.
      target: the submodule that corresponds to the torchvision network, ``"/"``-separated;
        default: the top level when the model has a ``backbone`` and the keys start with
        ``backbone.`` (a whole torchvision segmentation network), else ``"backbone"`` when the
        model has one (DeepLab), else the top level (FCN's VGG trunk, a bare
        :class:`~jaxseg.models.resnet.ResNet`).
      key_map: ``"caffe_resnet"`` (:func:`caffe_resnet_key_map`) or a callable renaming the dict.
      strict: raise on unused keys (other than ``ignore_prefixes``) and on parameters or
        statistics under ``target`` left without a value.
      new_modules: top-level modules under ``target`` that the torchvision network does not
        have and that keep their initial values (FCN's score and deconvolution layers).
      reinit_classifiers: torch module names (relative to ``target``) of classifiers whose number
        of outputs may differ from the model's: on such a mismatch (and only in that dimension)
        their weight and bias keep the values of ``variables`` (re-initialised), with a message.
      verbose: print one line naming the unused keys and one per re-initialised classifier.
      return_report: also return ``{"loaded": [...], "unused": [...], "missing": [...],
        "reinitialised": [...]}`` (torch keys, except ``missing``: Flax paths).

    Returns:
      New variables (plain nested dicts; the input is not modified), and the report if asked.
    """
    if not isinstance(variables, Mapping):
        raise TypeError(f"variables must be a mapping of collections, got {type(variables).__name__}")
    if isinstance(state_dict, (str, os.PathLike)):
        state_dict = load_state_dict(state_dict)
    if not isinstance(state_dict, Mapping):
        raise TypeError(
            f"state_dict must be a mapping or a file path, got {type(state_dict).__name__}")
    if target is not None and not isinstance(target, str):
        raise TypeError(f"target must be a str or None, got {type(target).__name__}")
    for arg, value in (("ignore_prefixes", ignore_prefixes), ("new_modules", new_modules),
                       ("reinit_classifiers", reinit_classifiers)):
        if isinstance(value, str) or not all(isinstance(v, str) for v in value):
            raise TypeError(f"{arg} must be a tuple of str, got {value!r}")
    state = {k: _to_numpy(v) for k, v in state_dict.items()}
    if key_map == "caffe_resnet":
        state = caffe_resnet_key_map(state)
    elif callable(key_map):
        state = dict(key_map(state))
    elif key_map is not None:
        raise ValueError(f"key_map must be 'caffe_resnet', a callable or None, got {key_map!r}")

    new = _to_plain(variables)
    if "params" not in new:
        raise ValueError(f"variables have no 'params' collection (collections: {sorted(new)})")
    if target is None:
        whole = any(k.startswith("backbone.") for k in state)
        target = "backbone" if "backbone" in new["params"] and not whole else ""
    tpath = tuple(p for p in target.split("/") if p)
    params = _get(new["params"], tpath)
    if params is None:
        raise ValueError(f"target {target!r} is not a submodule of the model's params")
    stats = _get(new.get("batch_stats", {}), tpath) or {}

    loaded, unused, reinitialised = [], [], []
    filled: set[tuple[str, ...]] = set()
    for key, value in state.items():
        module, _, leaf = key.rpartition(".")
        if leaf in _SKIP_SUFFIXES:
            continue
        path = _flax_path(module)
        p_mod = _get(params, path)
        s_mod = _get(stats, path)
        if leaf in ("running_mean", "running_var"):
            coll, name = s_mod, ("mean" if leaf == "running_mean" else "var")
            dest = ("batch_stats",) + path + (name,)
        elif leaf == "weight" and isinstance(p_mod, Mapping) and "kernel" in p_mod:
            coll, name = p_mod, "kernel"
            dest = ("params",) + path + (name,)
        elif leaf == "weight" and isinstance(p_mod, Mapping) and "scale" in p_mod:
            coll, name = p_mod, "scale"
            dest = ("params",) + path + (name,)
        elif leaf == "weight" and isinstance(p_mod, Mapping) and "alpha" in p_mod:
            coll, name = p_mod, "alpha"
            dest = ("params",) + path + (name,)
        elif leaf == "bias":
            coll, name = p_mod, "bias"
            dest = ("params",) + path + (name,)
        else:
            coll, name, dest = None, None, None
        if not isinstance(coll, Mapping) or name not in coll:
            unused.append(key)
            continue
        tgt = coll[name]
        tshape = tuple(tgt.shape)
        if module in reinit_classifiers and _other_class_count(value, tshape, name):
            if verbose:
                print(f"import_torch_state_dict: {key} has {value.shape[0]} classes, the model "
                      f"{tshape[-1]}: {'/'.join(dest[:1] + tpath + dest[1:])} keeps its initial value "
                      "(re-initialised).", flush=True)
            filled.add(dest)
            reinitialised.append(key)
            continue
        if name == "kernel":
            if value.ndim == 2:
                kh, kw, cin, cout = tshape
                if value.shape != (cout, cin * kh * kw):
                    raise ValueError(
                        f"{key}: linear weight {value.shape} does not fit kernel {tshape} at {'/'.join(dest)}"
                    )
                value = value.reshape(cout, cin, kh, kw)
            if value.ndim != 4:
                raise ValueError(f"{key}: expected a 4-D conv weight, got shape {value.shape}")
            value = value.transpose(2, 3, 1, 0)
        if tuple(value.shape) != tshape:
            raise ValueError(
                f"{key}: shape {tuple(value.shape)} (after layout conversion) does not match "
                f"{'/'.join(tpath + dest)} of shape {tshape}"
            )
        coll[name] = np.asarray(value, dtype=np.dtype(tgt.dtype))
        filled.add(dest)
        loaded.append(key)

    missing = []
    for coll_name, tree in (("params", params), ("batch_stats", stats)):
        for path, _ in _leaves(tree):
            if path[0] in new_modules:
                continue
            if (coll_name,) + path not in filled:
                missing.append("/".join((coll_name,) + tpath + path))
    unexpected = [k for k in unused if not k.startswith(tuple(ignore_prefixes))]
    if verbose and unused and not (strict and unexpected):
        modules = list(dict.fromkeys(k.rpartition(".")[0] for k in unused))
        print(f"import_torch_state_dict: {len(unused)} keys of the state dict not used by the "
              f"model, of {', '.join(modules[:10])}{' ...' if len(modules) > 10 else ''}.",
              flush=True)
    if strict and (unexpected or missing):
        raise ValueError(
            "state dict does not match the model"
            + (f"; unused keys: {unexpected[:20]}{' ...' if len(unexpected) > 20 else ''}" if unexpected else "")
            + (f"; Flax leaves with no value: {missing[:20]}{' ...' if len(missing) > 20 else ''}" if missing else "")
        )
    report = {"loaded": loaded, "unused": unused, "missing": missing,
              "reinitialised": reinitialised}
    return (new, report) if return_report else new


def _other_class_count(value: np.ndarray, tshape: tuple[int, ...], name: str) -> bool:
    """Whether a torch classifier ``weight [O, I, 1, 1]`` / ``bias [O]`` differs from the Flax
    ``kernel [1, 1, I, C]`` / ``bias [C]`` in the number of outputs only."""
    if name == "kernel" and value.ndim == 4 and len(tshape) == 4:
        return value.shape[0] != tshape[3] and value.shape[1:] == (tshape[2], tshape[0], tshape[1])
    if name == "bias" and value.ndim == 1 and len(tshape) == 1:
        return value.shape[0] != tshape[0]
    return False


_TORCH_LEAF = {"kernel": "weight", "scale": "weight", "alpha": "weight", "bias": "bias",
               "mean": "running_mean", "var": "running_var"}


def export_torch_state_dict(variables: Mapping[str, Any], *, target: str = "") -> dict[str, np.ndarray]:
    """The inverse of :func:`import_torch_state_dict`: Flax ``variables`` (or those of the
    submodule ``target``) as a torchvision-named state dict of NumPy arrays.

    ``params/<m>/kernel`` becomes ``<m>.weight`` in PyTorch's convolution layout
    (``[O, I, kh, kw]``), ``scale`` ``weight``, ``batch_stats/<m>/mean``/``var``
    ``running_mean``/``running_var``; a numeric suffix of a module name becomes its own key
    component (``layer1_0`` -> ``layer1.0``, ``convs_1_0`` -> ``convs.1.0``). Weights of linear
    layers stay in the convolution layout (reshape them to ``[O, I * kh * kw]`` for a
    ``torch.nn.Linear``), and so do those of :class:`~jaxseg.models.layers.ConvTranspose` (which
    have no torchvision counterpart). ``torch.nn.Module.load_state_dict`` accepts the result (converted with
    ``torch.from_numpy``); BatchNorm's ``num_batches_tracked`` is not written (torch fills it).
    """
    if not isinstance(variables, Mapping):
        raise TypeError(f"variables must be a mapping of collections, got {type(variables).__name__}")
    tpath = tuple(p for p in target.split("/") if p)
    out: dict[str, np.ndarray] = {}
    for collection in ("params", "batch_stats"):
        tree = _get(variables.get(collection, {}), tpath)
        if tree is None:
            if collection == "params":
                raise ValueError(f"target {target!r} is not a submodule of the model's params")
            continue
        for path, leaf in _leaves(tree):
            if path[-1] not in _TORCH_LEAF:
                raise ValueError(f"export_torch_state_dict: no PyTorch name for the leaf "
                                 f"{'/'.join((collection,) + tpath + path)}")
            value = np.asarray(leaf)
            if path[-1] == "kernel" and value.ndim == 4:
                value = value.transpose(3, 2, 0, 1)
            module = ".".join(re.sub(r"_(\d+)(?=_|$)", r".\1", p) for p in path[:-1])
            out[f"{module}.{_TORCH_LEAF[path[-1]]}"] = np.ascontiguousarray(value)
    return out
