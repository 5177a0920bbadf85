"""Flax linen segmentation models, a registry and PyTorch weight import.

``create(name, num_classes, **options)`` builds a model (see :mod:`jaxseg.models.registry` for
the names and options); ``module.apply(variables, images, train=...)`` maps float images
``[B, H, W, 3]`` to float32 logits ``[B, H, W, num_classes]`` (or ``[B, ceil(H/s), ceil(W/s), C]``
with ``logits_stride=True``, ``s = module.feature_stride``; compare them with
:func:`downsample_labels`). Weights in PyTorch format (torchvision key names, or Caffe ResNet
names) load with :func:`load_state_dict` and :func:`import_torch_state_dict` (whole torchvision
segmentation networks too); :func:`export_torch_state_dict` writes variables back in that format.
:func:`init_variables` initialises a model under jit with cheap-to-compile RngBitGenerator keys.
"""

import numbers

import jax.numpy as jnp

from jaxseg.models.deeplab import DeepLabV2, DeepLabV3Plus
from jaxseg.models.enet import ENet
from jaxseg.models.fcn import FCN8s
from jaxseg.models.registry import available, create, init_variables, options, register_model
from jaxseg.models.resnet import ResNet
from jaxseg.models.segnet import SegNet
from jaxseg.models.torchvision_seg import DeepLabV3, FCNResNet
from jaxseg.models.unet import UNet
from jaxseg.models.torch_import import (caffe_resnet_key_map, export_torch_state_dict,
                                        import_torch_state_dict, load_state_dict)


def downsample_labels(labels, stride: int):
    """Nearest-neighbour label downsampling matching ``logits_stride=True`` outputs:
    ``labels[:, ::stride, ::stride]`` has shape ``[B, ceil(H/stride), ceil(W/stride)]``, the
    size of the stride-``stride`` logits (pixel ``(i, j)`` of the logits is centred on input pixel
    ``(stride i, stride j)`` for the strided convolutions used here)."""
    labels = jnp.asarray(labels)
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        raise TypeError(f"downsample_labels: labels must be integer class ids, got dtype "
                        f"{labels.dtype}")
    if labels.ndim != 3:
        raise ValueError(f"downsample_labels: labels must be [B, H, W], got shape {labels.shape}")
    if not isinstance(stride, numbers.Integral) or isinstance(stride, bool) or stride < 1:
        raise ValueError(f"downsample_labels: stride must be an int >= 1, got {stride!r}")
    return labels[:, :: int(stride), :: int(stride)]


__all__ = [
    "available",
    "create",
    "init_variables",
    "options",
    "register_model",
    "downsample_labels",
    "load_state_dict",
    "import_torch_state_dict",
    "export_torch_state_dict",
    "caffe_resnet_key_map",
    "DeepLabV2",
    "DeepLabV3",
    "DeepLabV3Plus",
    "ENet",
    "FCN8s",
    "FCNResNet",
    "ResNet",
    "SegNet",
    "UNet",
]
