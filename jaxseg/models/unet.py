"""U-Net (Ronneberger, Fischer, Brox, "U-Net: Convolutional Networks for Biomedical Image
Segmentation", MICCAI 2015, Sec. 2, Fig. 1).

Contracting path: ``depth`` (4) times [double conv, 2x2 max-pool], channel widths
``base, 2 base, ..., 2^depth base`` (64..1024); expanding path: ``depth`` times [2x2 stride-2
up-convolution halving the channels, concatenation with the skip features of the same level,
double conv]; a final 1x1 convolution to the class scores. A double conv is
``[3x3 conv, BatchNorm, ReLU] x 2``.

As in the widely used PyTorch re-implementations (e.g. milesial/Pytorch-UNet, 31.04M parameters
for 64..1024 channels), the 3x3 convolutions are padded (output size = input size; the paper used
unpadded convolutions and cropped the skips, which changes no parameter count) and followed by
BatchNorm (convolutions then carry no bias). For odd sizes, pooling floors (``H -> floor(H/2)``)
and the up-convolved map is zero-padded at the bottom/right to the skip's size, so any input size
gives logits of the input size. Parameter count with 64..1024 channels, 3 input channels and two
classes: 31,037,698 (the 31.0M figure).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jaxseg.models import layers


class UNet(nn.Module):
    """U-Net; ``base_channels`` is the width of the first level (64 in the paper)."""

    num_classes: int
    base_channels: int = 64
    width: float = 1.0
    depth: int = 4
    bn_momentum: float = 0.9
    bn_epsilon: float = 1e-5
    frozen_batchnorm: bool = False
    logits_stride: bool = False  # accepted for a uniform interface; logits are full resolution
    dtype: Any = jnp.float32

    @property
    def feature_stride(self) -> int:
        return 1

    @nn.compact
    def __call__(self, images, *, train: bool):
        layers.check_images(images, "UNet")
        if self.depth < 1:
            raise ValueError(f"UNet depth must be >= 1, got {self.depth}")
        if min(images.shape[1:3]) < 2**self.depth:
            raise ValueError(
                f"UNet with depth {self.depth} needs images of at least {2**self.depth} pixels per side,"
                f" got {images.shape[1:3]}"
            )

        def double_conv(x, ch, name):
            for k in range(2):
                x = layers.conv_bn_relu(self, x, train, ch, 3, name=f"{name}_conv{k}", bn_name=f"{name}_bn{k}")
            return x

        x = images.astype(self.dtype)
        skips = []
        for level in range(self.depth):
            x = double_conv(x, layers.scaled(self.base_channels * 2**level, self.width), f"down{level}")
            skips.append(x)
            x = nn.max_pool(x, (2, 2), strides=(2, 2))
        x = double_conv(x, layers.scaled(self.base_channels * 2**self.depth, self.width), "bottom")
        for level in reversed(range(self.depth)):
            ch = layers.scaled(self.base_channels * 2**level, self.width)
            x = layers.ConvTranspose(ch, 2, 2, use_bias=True, dtype=self.dtype, name=f"up{level}_upconv")(x)
            skip = skips[level]
            dh, dw = skip.shape[1] - x.shape[1], skip.shape[2] - x.shape[2]
            x = jnp.pad(x, ((0, 0), (0, dh), (0, dw), (0, 0)))
            x = jnp.concatenate([skip, x], axis=-1)
            x = double_conv(x, ch, f"up{level}")
        logits = layers.conv(self.num_classes, 1, use_bias=True, dtype=self.dtype, name="classifier")(x)
        return logits.astype(jnp.float32)
