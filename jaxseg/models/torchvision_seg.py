"""torchvision's segmentation networks on ResNet backbones: DeepLab-v3 and FCN, parameter for
parameter and output for output, so that torchvision's pretrained state dicts
(``deeplabv3_resnet50``, ``deeplabv3_resnet101``, ``fcn_resnet50``, ``fcn_resnet101``) import
whole with :func:`jaxseg.models.import_torch_state_dict`.

Architecture (torchvision ``models/segmentation``):

* Backbone: ResNet-50/101 (v1.5: stride in the 3x3 convolution) with
  ``replace_stride_with_dilation=[False, True, True]``: output stride 8, ``layer3`` and ``layer4``
  dilated, the first block of each dilated stage keeping the previous stage's dilation
  (``layer3`` 1, 2, 2, ...; ``layer4`` 2, 4, 4; :class:`~jaxseg.models.resnet.ResNet` with
  ``torchvision_dilation=True``).
* DeepLab-v3 head (Chen et al., "Rethinking Atrous Convolution for Semantic Image Segmentation",
  2017, Sec. 3.3; torchvision's ``DeepLabHead``): ASPP on ``layer4`` with a 1x1 branch, 3x3
  branches at rates 12, 24, 36 and image pooling, each 256 channels with BatchNorm and ReLU,
  concatenated, projected (1x1, BatchNorm, ReLU, dropout 0.5), then a 3x3 convolution (BatchNorm,
  ReLU) and the 1x1 classifier (with bias).
* FCN head (torchvision's ``FCNHead``, after Long et al., CVPR 2015): a 3x3 convolution to a
  quarter of the input channels (2048 -> 512; BatchNorm, ReLU), dropout 0.1, the 1x1 classifier.
* Auxiliary head (``aux_head=True``; torchvision's ``aux_loss=True``, which its pretrained
  weights have): an FCN head on ``layer3`` (1024 -> 256 -> classes).
* The logits (and the auxiliary logits) are upsampled bilinearly to the input size with
  half-pixel centres (``F.interpolate(..., mode="bilinear", align_corners=False)``, which
  :func:`jax.image.resize` with ``antialias=False`` computes; the image-pooling branch's
  upsampling of a 1x1 map is a broadcast). BatchNorm epsilon 1e-5; dropout only when training.

Parameter names follow torchvision's keys (``classifier.0.convs.1.0.weight`` is
``params/classifier_0/convs_1_0/kernel``; ``aux_classifier.4.bias`` is
``params/aux_classifier_4/bias``; the backbone is ``backbone`` as in the DeepLab models).

Outputs: ``apply(variables, images, train=...)`` returns the float32 logits
``[B, H, W, num_classes]``. With ``aux_head=True`` the model returns, when ``train=True``,
``{"out": logits, "aux": aux_logits}`` (what a trainer needs for torchvision's loss
``loss(out) + w * loss(aux)``), and the logits alone when ``train=False`` (evaluation), unless
``return_aux=True`` is passed. The auxiliary head's parameters exist whenever ``aux_head=True``.

Parameter counts with 21 classes, as torchvision's (``tests/test_models_torchvision_seg.py``):
DeepLab-v3 ResNet-50 39,638,869 (42,004,074 with the auxiliary head), ResNet-101 58,630,997
(60,996,202); FCN ResNet-50 32,957,013 (35,322,218), ResNet-101 51,949,141 (54,314,346).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jaxseg.models import layers
from jaxseg.models.deeplab import aspp
from jaxseg.models.resnet import backbone_of

# torchvision's auxiliary FCN head's dropout.
AUX_DROPOUT = 0.1


def fcn_head(model: nn.Module, x, train: bool, *, prefix: str, dropout_rate: float):
    """torchvision's ``FCNHead`` created in ``model``'s compact ``__call__``: modules
    ``{prefix}_0`` (3x3 conv to ``C // 4``), ``{prefix}_1`` (BatchNorm), ReLU, dropout,
    ``{prefix}_4`` (1x1 classifier with bias); returns the logits at the input's size."""
    y = layers.conv_bn_relu(model, x, train, max(1, x.shape[-1] // 4), 3, name=f"{prefix}_0",
                            bn_name=f"{prefix}_1")
    y = nn.Dropout(dropout_rate, deterministic=not train, name=f"{prefix}_3")(y)
    return layers.conv(model.num_classes, 1, use_bias=True, dtype=model.dtype,
                       name=f"{prefix}_4")(y)


class TorchvisionASPP(nn.Module):
    """torchvision's ``ASPP`` module (``classifier.0`` of ``DeepLabHead``) with its parameter
    names: ``convs_0_{0,1}`` (1x1 branch), ``convs_{i}_{0,1}`` (atrous branches),
    ``convs_{n+1}_{1,2}`` (image pooling), ``project_{0,1}``; see :func:`jaxseg.models.deeplab.aspp`."""

    rates: Sequence[int]
    channels: int
    dropout_rate: float
    bn_momentum: float
    bn_epsilon: float
    frozen_batchnorm: bool
    dtype: Any

    @nn.compact
    def __call__(self, x, train: bool):
        n = len(self.rates)
        names = [(f"convs_{i}_0", f"convs_{i}_1") for i in range(n + 1)]
        names += [(f"convs_{n + 1}_1", f"convs_{n + 1}_2"), ("project_0", "project_1")]
        return aspp(self, x, train, rates=self.rates, channels=self.channels,
                    dropout_rate=self.dropout_rate, names=names)


class _TorchvisionSegmentation(nn.Module):
    """What torchvision's ``DeepLabV3`` and ``FCN`` (``_SimpleSegmentationModel``) share: the
    dilated ResNet, the main head on ``layer4`` (:meth:`head`), the optional auxiliary FCN head on
    ``layer3`` and the bilinear upsampling. See the module docstring."""

    num_classes: int
    depth: int = 50
    stage_sizes: Sequence[int] | None = None
    block: str = "bottleneck"
    width: float = 1.0
    output_stride: int = 8
    aux_head: bool = False
    dropout_rate: float = 0.1
    logits_stride: bool = False
    bn_momentum: float = 0.9
    bn_epsilon: float = 1e-5
    frozen_batchnorm: bool = False
    dtype: Any = jnp.float32

    @property
    def feature_stride(self) -> int:
        return self.output_stride

    def head(self, x, train: bool):  # pragma: no cover - overridden
        raise NotImplementedError

    def _check_options(self, return_aux):
        name = type(self).__name__
        if self.output_stride not in (8, 16):
            raise ValueError(f"{name}: output_stride must be 8 or 16, got {self.output_stride!r}")
        if not 0.0 <= float(self.dropout_rate) < 1.0:
            raise ValueError(f"{name}: dropout_rate must lie in [0, 1), got {self.dropout_rate!r}")
        for field, value in (("aux_head", self.aux_head), ("logits_stride", self.logits_stride),
                             ("return_aux", return_aux)):
            if value is not None and not isinstance(value, bool):
                raise TypeError(f"{name}: {field} must be a bool, got {value!r}")
        if return_aux and not self.aux_head:
            raise ValueError(f"{name}: return_aux=True needs a model built with aux_head=True")

    @nn.compact
    def __call__(self, images, *, train: bool, return_aux: bool | None = None):
        layers.check_images(images, type(self).__name__)
        self._check_options(return_aux)
        feats = backbone_of(self, torchvision_dilation=True)(images, train)
        size = images.shape[1:3]
        logits = layers.finish_logits(self.head(feats["layer4"], train), size, self.logits_stride)
        if not self.aux_head:
            return logits
        aux = fcn_head(self, feats["layer3"], train, prefix="aux_classifier",
                       dropout_rate=AUX_DROPOUT)
        if return_aux is None:
            return_aux = train
        if not return_aux:
            return logits
        return {"out": logits, "aux": layers.finish_logits(aux, size, self.logits_stride)}


class DeepLabV3(_TorchvisionSegmentation):
    """torchvision's DeepLab-v3 on a ResNet (``deeplabv3_resnet50/101``); see the module docstring.

    Submodules: ``backbone``, ``classifier_0`` (:class:`TorchvisionASPP`), ``classifier_1`` (3x3
    conv), ``classifier_2`` (BatchNorm), ``classifier_4`` (classifier); with ``aux_head``,
    ``aux_classifier_{0,1,4}``. ``dropout_rate`` is the ASPP projection's (0.5).
    """

    aspp_rates: Sequence[int] = (12, 24, 36)
    aspp_channels: int = 256
    dropout_rate: float = 0.5

    def head(self, x, train: bool):
        if not self.aspp_rates or any(int(r) < 1 for r in self.aspp_rates):
            raise ValueError(f"DeepLabV3: aspp_rates must be positive ints, got {self.aspp_rates!r}")
        x = TorchvisionASPP(tuple(int(r) for r in self.aspp_rates), self.aspp_channels,
                            self.dropout_rate, self.bn_momentum, self.bn_epsilon,
                            self.frozen_batchnorm, self.dtype, name="classifier_0")(x, train)
        x = layers.conv_bn_relu(self, x, train, self.aspp_channels, 3, name="classifier_1",
                                bn_name="classifier_2")
        return layers.conv(self.num_classes, 1, use_bias=True, dtype=self.dtype,
                           name="classifier_4")(x)


class FCNResNet(_TorchvisionSegmentation):
    """torchvision's FCN on a ResNet (``fcn_resnet50/101``); see the module docstring.

    Submodules: ``backbone``, ``classifier_{0,1,4}`` (FCN head); with ``aux_head``,
    ``aux_classifier_{0,1,4}``. ``dropout_rate`` is the head's (0.1).
    """

    def head(self, x, train: bool):
        return fcn_head(self, x, train, prefix="classifier", dropout_rate=self.dropout_rate)


__all__ = ["DeepLabV3", "FCNResNet", "TorchvisionASPP", "fcn_head", "AUX_DROPOUT"]
