"""DeepLab-v2 and DeepLab-v3+ on ResNet backbones.

DeepLab-v2 (Chen et al., "DeepLab: Semantic Image Segmentation with Deep Convolutional Nets,
Atrous Convolution, and Fully Connected CRFs", TPAMI 2017, Sec. 3.1-3.2 and Fig. 7): a ResNet with
atrous stages at output stride 8 (Caffe stride placement in the 1x1 convolutions) and the ASPP-L
head: four parallel 3x3 convolutions with dilation rates 6, 12, 18, 24, each producing
``num_classes`` scores (with bias, weights initialised ``N(0, 0.01^2)``), whose outputs are
**summed** to give the logits at stride 8. The paper trained with the loss at stride 8 against
downsampled labels and upsampled bilinearly at test time; ``logits_stride=True`` returns the
stride-8 logits (the trainer then compares them with ``labels[:, ::8, ::8]``, see
:func:`jaxseg.models.downsample_labels`), otherwise they are upsampled to the input size. The
Lovász-Softmax experiments (Berman et al. 2018, Sec. 4) use this model.

DeepLab-v3+ (Chen et al., "Encoder-Decoder with Atrous Separable Convolution", ECCV 2018,
Sec. 3.1-3.2, Fig. 2): a ResNet at output stride 16 (rates 6, 12, 18) or 8 (rates doubled, 12,
24, 36); ASPP (DeepLab-v3, Sec. 3.3) with a 1x1 branch, three 3x3 atrous branches and an image
pooling branch (global average -> 1x1 conv -> upsampled), each ``aspp_channels`` (256) wide with
BatchNorm and ReLU, concatenated and projected by a 1x1 conv (+BN, ReLU, dropout); the decoder
reduces the stride-4 ``layer1`` features to 48 channels (1x1 conv, BN, ReLU), concatenates them
with the bilinearly upsampled ASPP output, refines with two 3x3 convs of 256 channels (BN, ReLU)
and classifies with a 1x1 conv; the stride-4 logits are upsampled bilinearly to the input.
The convolutions are plain (not depthwise-separable), as in the paper's ResNet-101 variant.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jaxseg.models import layers
from jaxseg.models.resnet import backbone_of


def aspp(model: nn.Module, x, train: bool, *, rates: Sequence[int], channels: int,
         dropout_rate: float, names: Sequence[tuple[str, str]]):
    """Atrous spatial pyramid pooling with image pooling (DeepLab-v3, Chen et al. 2017, Sec. 3.3),
    created inside ``model``'s compact ``__call__`` (BatchNorm and dtype from its fields).

    Branches, each ``channels`` wide with BatchNorm and ReLU: a 1x1 convolution, a 3x3 convolution
    per rate in ``rates`` (dilation and padding = rate), and image pooling (global average, 1x1
    convolution, then broadcast back to the feature size: what a bilinear upsampling of a 1x1 map
    gives); concatenated and projected by a 1x1 convolution (BatchNorm, ReLU) and dropout.
    ``names`` holds ``(conv, batchnorm)`` module names for the 1x1 branch, each atrous branch, the
    pooling branch and the projection (``len(rates) + 3`` pairs).
    """
    if len(names) != len(rates) + 3:
        raise ValueError(f"aspp: names must hold {len(rates) + 3} (conv, bn) pairs, got {len(names)}")

    def conv_bn_relu(y, kernel, pair, dilation=1):
        return layers.conv_bn_relu(model, y, train, channels, kernel, name=pair[0], bn_name=pair[1],
                                   dilation=dilation)

    branches = [conv_bn_relu(x, 1, names[0])]
    for i, rate in enumerate(rates):
        branches.append(conv_bn_relu(x, 3, names[i + 1], dilation=int(rate)))
    pooled = jnp.mean(x.astype(jnp.float32), axis=(1, 2), keepdims=True).astype(model.dtype)
    pooled = conv_bn_relu(pooled, 1, names[-2])
    branches.append(jnp.broadcast_to(pooled, x.shape[:3] + (channels,)))
    y = conv_bn_relu(jnp.concatenate(branches, axis=-1), 1, names[-1])
    return nn.Dropout(dropout_rate, deterministic=not train)(y)


class DeepLabV2(nn.Module):
    """DeepLab-v2 (ASPP-L, summed branches) on a ResNet backbone; see the module docstring.

    Submodules: ``backbone`` (:class:`~jaxseg.models.resnet.ResNet`), ``aspp_0..aspp_3``.
    """

    num_classes: int
    depth: int = 101
    stage_sizes: Sequence[int] | None = None
    block: str = "bottleneck"
    width: float = 1.0
    output_stride: int = 8
    stride_in_1x1: bool = True
    multi_grid: Sequence[int] | None = None
    aspp_rates: Sequence[int] = (6, 12, 18, 24)
    logits_stride: bool = False
    bn_momentum: float = 0.9
    bn_epsilon: float = 1e-5
    frozen_batchnorm: bool = False
    dtype: Any = jnp.float32

    @property
    def feature_stride(self) -> int:
        return self.output_stride

    @nn.compact
    def __call__(self, images, *, train: bool):
        layers.check_images(images, "DeepLabV2")
        feats = backbone_of(self)(images, train)["layer4"]
        logits = 0.0
        for i, rate in enumerate(self.aspp_rates):
            logits = logits + layers.conv(
                self.num_classes,
                3,
                dilation=int(rate),
                use_bias=True,
                dtype=self.dtype,
                kernel_init=nn.initializers.normal(0.01),
                name=f"aspp_{i}",
            )(feats)
        return layers.finish_logits(logits, images.shape[1:3], self.logits_stride)


class DeepLabV3Plus(nn.Module):
    """DeepLab-v3+ (ASPP with image pooling, decoder) on a ResNet backbone.

    Submodules: ``backbone``; ``aspp_conv_{0..3}``/``aspp_bn_{0..3}`` (1x1 and atrous branches),
    ``aspp_pool_conv``/``aspp_pool_bn``, ``aspp_project``/``aspp_project_bn``, ``decoder_reduce``/
    ``decoder_reduce_bn``, ``decoder_conv_{0,1}``/``decoder_bn_{0,1}``, ``classifier``.
    Dropout (``dropout_rate`` after the ASPP projection) uses the ``dropout`` rng when training.
    """

    num_classes: int
    depth: int = 101
    stage_sizes: Sequence[int] | None = None
    block: str = "bottleneck"
    width: float = 1.0
    output_stride: int = 16
    stride_in_1x1: bool = False
    multi_grid: Sequence[int] | None = None
    aspp_rates: Sequence[int] | None = None
    aspp_channels: int = 256
    decoder_channels: int = 256
    low_level_channels: int = 48
    dropout_rate: float = 0.1
    logits_stride: bool = False
    bn_momentum: float = 0.9
    bn_epsilon: float = 1e-5
    frozen_batchnorm: bool = False
    dtype: Any = jnp.float32

    @property
    def feature_stride(self) -> int:
        return 4

    @nn.compact
    def __call__(self, images, *, train: bool):
        layers.check_images(images, "DeepLabV3Plus")
        if self.output_stride not in (8, 16):
            raise ValueError(f"DeepLabV3Plus output_stride must be 8 or 16, got {self.output_stride}")
        rates = self.aspp_rates
        if rates is None:
            rates = (6, 12, 18) if self.output_stride == 16 else (12, 24, 36)

        def conv_bn_relu(x, features, kernel, name, bn_name):
            return layers.conv_bn_relu(self, x, train, features, kernel, name=name, bn_name=bn_name)

        feats = backbone_of(self)(images, train)
        high, low = feats["layer4"], feats["layer1"]
        names = [(f"aspp_conv_{i}", f"aspp_bn_{i}") for i in range(len(rates) + 1)]
        names += [("aspp_pool_conv", "aspp_pool_bn"), ("aspp_project", "aspp_project_bn")]
        x = aspp(self, high, train, rates=rates, channels=self.aspp_channels,
                 dropout_rate=self.dropout_rate, names=names)

        low = conv_bn_relu(low, self.low_level_channels, 1, "decoder_reduce", "decoder_reduce_bn")
        x = layers.resize_bilinear(x, low.shape[1:3])
        x = jnp.concatenate([x, low.astype(x.dtype)], axis=-1)
        for i in range(2):
            x = conv_bn_relu(x, self.decoder_channels, 3, f"decoder_conv_{i}", f"decoder_bn_{i}")
        logits = layers.conv(
            self.num_classes, 1, use_bias=True, dtype=self.dtype, name="classifier"
        )(x)
        return layers.finish_logits(logits, images.shape[1:3], self.logits_stride)
