"""Model registry: ``create(name, num_classes, **options)``.

Every model maps float images ``[B, H, W, 3]`` to float32 logits ``[B, H, W, num_classes]``
(``module.apply(variables, images, train=...)``; BatchNorm statistics in the ``batch_stats``
collection, pass ``mutable=["batch_stats"]`` when ``train=True``; dropout, where the model has
any and ``train=True``, draws from the ``dropout`` rng). Each module has a ``feature_stride``
property: the stride of its logits when ``logits_stride=True`` (1 for models that predict at
full resolution).

Options (each model accepts those listed in :func:`options`):

=====================  =======================================================================
``dtype``              compute dtype (``"float32"``, ``"bfloat16"`` or a jnp dtype); parameters
                       stay float32 and logits are returned as float32
``bn_momentum``        BatchNorm running-average momentum, Flax convention (0.9 = PyTorch 0.1)
``bn_epsilon``         BatchNorm epsilon
``frozen_batchnorm``   normalise with the running statistics also when training, never update
                       them (DeepLab-v2's fine-tuning regime)
``output_stride``      8 or 16 (DeepLab: atrous convolution replaces the last strides)
``width``              channel multiplier of the backbone/encoder (and heads for small variants)
``logits_stride``      return logits at ``module.feature_stride`` (``ceil(H/s) x ceil(W/s)``,
                       aligned with ``labels[:, ::s, ::s]``) instead of upsampling them
``stride_in_1x1``      ResNet bottleneck stride in the 1x1 (Caffe) instead of the 3x3 conv
``multi_grid``         DeepLab-v3 multi-grid dilation multipliers for ResNet ``layer4``
``aspp_rates``         ASPP dilation rates
``dropout_rate``       dropout probability (DeepLab-v3+ after ASPP, FCN fc6/fc7, ENet stages 2-5,
                       torchvision DeepLab-v3 after ASPP (0.5) and FCN heads (0.1))
``aux_head``           torchvision models: the auxiliary FCN head on ``layer3``; the model then
                       returns ``{"out", "aux"}`` logits when ``train=True``
``aspp_channels``      ASPP width (DeepLab-v3 and v3+, 256)
=====================  =======================================================================

BatchNorm and multiple devices: no ``axis_name`` is used; under ``jax.jit`` with the batch sharded
over a mesh the statistics are those of the global batch (see :mod:`jaxseg.models.layers`).

Registered names (``available()``): full models ``deeplabv2_resnet101``, ``deeplabv2_resnet50``,
``deeplabv3plus_resnet50``, ``deeplabv3plus_resnet101``, ``deeplabv3plus_resnet18``,
``fcn8s_vgg16``, ``unet``, ``segnet``, ``enet``; torchvision's segmentation networks, whose
pretrained state dicts import whole (:mod:`jaxseg.models.torchvision_seg`): ``deeplabv3_resnet50``,
``deeplabv3_resnet101``, ``fcn_resnet50``, ``fcn_resnet101``; reduced variants for CPU tests
and the default job: ``unet_small`` (base width 8, 3 levels), ``deeplabv3plus_resnet18_small``
(ResNet-18 at width 1/4, 64-channel heads), ``deeplabv3_resnet18_small`` (torchvision's
DeepLab-v3 on a ResNet-18 at width 1/4, 64-channel ASPP), ``deeplabv2_resnet18_small``,
``fcn8s_vgg16_small`` (width 1/8, 256-channel fc layers), ``segnet_small`` (width 1/8),
``enet_small`` (width 1/2).
"""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jaxseg.models.deeplab import DeepLabV2, DeepLabV3Plus
from jaxseg.models.enet import ENet
from jaxseg.models.fcn import FCN8s
from jaxseg.models.segnet import SegNet
from jaxseg.models.torchvision_seg import DeepLabV3, FCNResNet
from jaxseg.models.unet import UNet


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    cls: type[nn.Module]
    defaults: dict[str, Any]
    description: str


_REGISTRY: dict[str, ModelSpec] = {}

_COMMON = ("dtype", "bn_momentum", "bn_epsilon", "frozen_batchnorm")


def register_model(name: str, cls: type[nn.Module], description: str = "", **defaults) -> None:
    """Register ``cls`` (a linen Module with a ``num_classes`` field) under ``name`` with default
    field values."""
    if name in _REGISTRY:
        raise ValueError(f"model {name!r} is already registered")
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = set(defaults) - fields
    if unknown:
        raise ValueError(f"{cls.__name__} has no fields {sorted(unknown)}")
    _REGISTRY[name] = ModelSpec(cls, dict(defaults), description)


def available() -> list[str]:
    """Sorted list of registered model names."""
    return sorted(_REGISTRY)


def options(name: str) -> list[str]:
    """The option names :func:`create` accepts for model ``name``."""
    spec = _spec(name)
    skip = {"num_classes", "parent", "name"}
    return sorted(f.name for f in dataclasses.fields(spec.cls) if f.name not in skip)


def _spec(name: str) -> ModelSpec:
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(available())}")
    return _REGISTRY[name]


_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def _as_dtype(value):
    if isinstance(value, str):
        if value not in _DTYPES:
            raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {value!r}")
        return _DTYPES[value]
    if not jnp.issubdtype(jnp.dtype(value), jnp.floating):
        raise ValueError(f"dtype must be a floating dtype, got {value!r}")
    return jnp.dtype(value).type


def create(name: str, num_classes: int, **opts) -> nn.Module:
    """Build the registered model ``name`` predicting ``num_classes`` classes.

    ``opts`` override the registered defaults (see the module docstring; unknown options raise a
    ``ValueError`` listing the accepted ones). Tuples given as lists (e.g. from a ConfigDict) are
    accepted.
    """
    spec = _spec(name)
    if not isinstance(num_classes, numbers.Integral) or isinstance(num_classes, bool) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    num_classes = int(num_classes)
    stride = opts.get("output_stride", None)
    if stride is not None and stride not in (8, 16, 32):
        raise ValueError(f"{name}: output_stride must be 8, 16 or 32 (the backbone's strides), "
                         f"got {stride!r}")
    allowed = set(options(name))
    unknown = set(opts) - allowed
    if unknown:
        raise ValueError(
            f"model {name!r} does not take options {sorted(unknown)}; accepted: {sorted(allowed)}"
        )
    kwargs = {**spec.defaults, **opts}
    if "dtype" in kwargs:
        kwargs["dtype"] = _as_dtype(kwargs["dtype"])
    for key in ("aspp_rates", "multi_grid", "stage_sizes"):
        if kwargs.get(key) is not None:
            kwargs[key] = tuple(int(v) for v in kwargs[key])
    return spec.cls(num_classes=num_classes, **kwargs)


def init_variables(module: nn.Module, seed: int, image_shape, *, rng_impl: str | None = "rbg"):
    """Initialise ``module`` for images of ``image_shape`` (``[B, H, W, 3]``) under ``jax.jit``.

    ``rng_impl="rbg"`` draws the initial weights with XLA's RngBitGenerator instead of the default
    threefry: same distributions, different numbers, and a much cheaper compilation on CPU (for
    ``unet_small`` 8 s instead of 38 s on a loaded 2-core machine). ``rng_impl=None`` uses JAX's
    default key implementation. Returns the variables dict (``params`` and, where the model has
    BatchNorm, ``batch_stats``).
    """
    import jax

    if not isinstance(seed, numbers.Integral) or isinstance(seed, bool):
        raise ValueError(f"init_variables: seed must be an int, got {seed!r}")
    shape = tuple(image_shape)
    if len(shape) != 4 or not all(isinstance(d, numbers.Integral) and d >= 1 for d in shape):
        raise ValueError(f"init_variables: image_shape must be four positive ints [B, H, W, 3], "
                         f"got {image_shape!r}")
    key = jax.random.key(seed) if rng_impl is None else jax.random.key(seed, impl=rng_impl)
    images = jnp.zeros(shape, jnp.float32)
    return jax.jit(lambda k, x: module.init(k, x, train=False))(key, images)


def _register_all(register: Callable[..., None]) -> None:
    register("deeplabv2_resnet101", DeepLabV2, "DeepLab-v2 ASPP-L, ResNet-101, OS 8, Caffe strides",
             depth=101)
    register("deeplabv2_resnet50", DeepLabV2, "DeepLab-v2 ASPP-L, ResNet-50, OS 8, Caffe strides",
             depth=50)
    register("deeplabv2_resnet18_small", DeepLabV2,
             "DeepLab-v2 head on a ResNet-18 at width 1/4 (CPU tests)",
             stage_sizes=(2, 2, 2, 2), block="basic", width=0.25, stride_in_1x1=False)
    register("deeplabv3plus_resnet50", DeepLabV3Plus, "DeepLab-v3+, ResNet-50, OS 16", depth=50)
    register("deeplabv3plus_resnet101", DeepLabV3Plus, "DeepLab-v3+, ResNet-101, OS 16", depth=101)
    register("deeplabv3plus_resnet18", DeepLabV3Plus, "DeepLab-v3+, ResNet-18, OS 16",
             stage_sizes=(2, 2, 2, 2), block="basic")
    register("deeplabv3plus_resnet18_small", DeepLabV3Plus,
             "DeepLab-v3+ on a ResNet-18 at width 1/4 with 64-channel ASPP/decoder (CPU tests)",
             stage_sizes=(2, 2, 2, 2), block="basic", width=0.25, aspp_channels=64,
             decoder_channels=64, low_level_channels=16)
    register("deeplabv3_resnet50", DeepLabV3, "torchvision DeepLab-v3, ResNet-50, OS 8", depth=50)
    register("deeplabv3_resnet101", DeepLabV3, "torchvision DeepLab-v3, ResNet-101, OS 8",
             depth=101)
    register("deeplabv3_resnet18_small", DeepLabV3,
             "torchvision DeepLab-v3 on a ResNet-18 at width 1/4, 64-channel ASPP (CPU tests)",
             stage_sizes=(2, 2, 2, 2), block="basic", width=0.25, aspp_channels=64)
    register("fcn_resnet50", FCNResNet, "torchvision FCN, ResNet-50, OS 8", depth=50)
    register("fcn_resnet101", FCNResNet, "torchvision FCN, ResNet-101, OS 8", depth=101)
    register("fcn8s_vgg16", FCN8s, "FCN-8s, VGG-16")
    register("fcn8s_vgg16_small", FCN8s, "FCN-8s, VGG-16 at width 1/8, 256-channel fc (CPU tests)",
             width=0.125, fc_channels=256)
    register("unet", UNet, "U-Net 64..1024")
    register("unet_small", UNet, "U-Net 8..64, three levels (default CPU job)",
             base_channels=8, depth=3)
    register("segnet", SegNet, "SegNet, VGG-16 encoder")
    register("segnet_small", SegNet, "SegNet at width 1/8 (CPU tests)", width=0.125)
    register("enet", ENet, "ENet")
    register("enet_small", ENet, "ENet at width 1/2 (CPU tests)", width=0.5)


_register_all(register_model)
