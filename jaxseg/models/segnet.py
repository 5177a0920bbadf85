"""SegNet (Badrinarayanan, Kendall, Cipolla, "SegNet: A Deep Convolutional Encoder-Decoder
Architecture for Image Segmentation", TPAMI 2017, Sec. 3, Fig. 2-3).

Encoder: the 13 convolutional layers of VGG-16, each ``3x3 conv (bias) -> BatchNorm -> ReLU``, in
five blocks, each block ending with a 2x2 stride-2 max-pool that also records the argmax position
inside each window (the "pooling indices"). Decoder: mirror image; each block starts with
max-unpooling (values put back at the recorded positions, zeros elsewhere, giving a sparse map),
followed by ``3x3 conv -> BatchNorm -> ReLU`` layers; the last decoder convolution is the 3x3
classifier producing the class scores (no BatchNorm/ReLU), as in the reference Caffe model
(``conv1_1_D``). Decoder widths: 512,512,512 | 512,512,256 | 256,256,128 | 128,64 | 64,classes.

Odd sizes: the pool pads with -inf (ceil mode) and the unpooling crops back to the recorded size,
so logits always have the input size. Parameter count (VGG-16 encoder 14.7M + decoder 14.7M +
BatchNorm): 29.45M for 12 classes; the paper reports 29.5M (Table 6).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jaxseg.models import layers

ENCODER = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))
DECODER = ((512, 512, 512), (512, 512, 256), (256, 256, 128), (128, 64), (64,))


class SegNet(nn.Module):
    """SegNet with a VGG-16 encoder; ``width`` scales every hidden channel count.

    Submodules: ``enc{b}_{k}``/``enc{b}_{k}_bn`` and ``dec{b}_{k}``/``dec{b}_{k}_bn`` (b = block
    1..5, numbered like the paper's conv{b}_{k} and conv{b}_{k}_D), ``classifier`` (conv1_1_D).
    """

    num_classes: int
    width: float = 1.0
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
        layers.check_images(images, "SegNet")

        def cbr(x, ch, name):
            return layers.conv_bn_relu(
                self, x, train, layers.scaled(ch, self.width), 3, name=name, bn_name=name + "_bn", use_bias=True
            )

        x = images.astype(self.dtype)
        pools = []
        for b, chans in enumerate(ENCODER, start=1):
            for k, ch in enumerate(chans, start=1):
                x = cbr(x, ch, f"enc{b}_{k}")
            x, idx, size = layers.max_pool_with_indices(x)
            pools.append((idx, size))
        for b, chans in zip(range(5, 0, -1), DECODER):
            idx, size = pools[b - 1]
            x = layers.max_unpool(x, idx, size)
            n = len(chans) + (1 if b == 1 else 0)
            for k, ch in zip(range(n, 0, -1), chans):
                x = cbr(x, ch, f"dec{b}_{k}")
        logits = layers.conv(self.num_classes, 3, use_bias=True, dtype=self.dtype, name="classifier")(x)
        return logits.astype(jnp.float32)
