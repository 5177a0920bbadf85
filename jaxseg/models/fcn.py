"""FCN-8s on VGG-16 (Long, Shelhamer, Darrell, "Fully Convolutional Networks for Semantic
Segmentation", CVPR 2015, Sec. 3-4.2, Fig. 3; VGG-16: Simonyan & Zisserman, ICLR 2015, config D).

Encoder: the 13 3x3 convolutions of VGG-16 (with bias, ReLU) in five blocks, each followed by a
2x2 stride-2 max-pool; the classifier's fully connected layers become convolutions, ``fc6``
(7x7, 4096 channels) and ``fc7`` (1x1, 4096), each with ReLU and dropout (0.5). Scores:
``score_fr`` (1x1 on fc7, stride 32), ``upscore2`` (learned 4x4 stride-2 deconvolution initialised
to bilinear interpolation, no bias) + ``score_pool4`` (1x1 on pool4, stride 16), ``upscore_pool4``
(deconvolution again) + ``score_pool3`` (1x1 on pool3, stride 8), then the fixed bilinear x8
upsampling (here :func:`jax.image.resize`, which is what FCN's frozen ``upscore8`` computes). The
score layers start at zero, as in the reference implementation.

Deviations, for arbitrary input sizes without the original's 100-pixel padding of ``conv1_1`` and
the "crop" layers: the convolutions use padding 1, fc6 padding 3, the pools are in ceil mode
(``H -> ceil(H/2)``), and each upsampled score map is cropped at the top-left to its skip map's
size (the deconvolution is aligned so that no offset is needed). The learned parameters are the
same as the original's, so VGG-16 ImageNet weights import with torchvision's names
(``features.{0,2,5,...,28}``, ``classifier.0`` -> fc6 reshaped to 7x7, ``classifier.3`` -> fc7).

Parameter count for 21 classes: 134.3M (the paper's Table 1 lists 134M for FCN-VGG16).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jaxseg.models import layers

# torchvision's indices of the 13 convolutions in ``vgg16().features`` and the pools after them.
VGG16_CONV_INDICES = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
VGG16_CHANNELS = (64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512)
VGG16_POOL_AFTER = (2, 7, 14, 21, 28)


def vgg16_trunk(x, *, width: float = 1.0, dtype: Any = jnp.float32):
    """VGG-16's convolutional trunk, created inside the calling module's compact ``__call__``.

    The 13 convolutions are named ``features_{i}`` after torchvision's ``vgg16().features[i]``.
    Returns the outputs of the five (ceil-mode) pools, ``pool1..pool5`` (strides 2..32).
    """
    out = {}
    block = 1
    for idx, ch in zip(VGG16_CONV_INDICES, VGG16_CHANNELS):
        x = layers.conv(layers.scaled(ch, width), 3, use_bias=True, dtype=dtype, name=f"features_{idx}")(x)
        x = nn.relu(x)
        if idx in VGG16_POOL_AFTER:
            x = layers.max_pool(x, 2, 2, ceil_mode=True)
            out[f"pool{block}"] = x
            block += 1
    return out


class FCN8s(nn.Module):
    """FCN-8s with a VGG-16 encoder; see the module docstring.

    Submodules: ``features_{i}`` (VGG convs), ``classifier_0`` (fc6), ``classifier_3`` (fc7),
    ``score_fr``, ``score_pool4``, ``score_pool3``, ``upscore2``, ``upscore_pool4``.
    ``logits_stride=True`` returns the stride-8 fused scores.
    """

    num_classes: int
    width: float = 1.0
    fc_channels: int = 4096
    dropout_rate: float = 0.5
    logits_stride: bool = False
    dtype: Any = jnp.float32

    @property
    def feature_stride(self) -> int:
        return 8

    @nn.compact
    def __call__(self, images, *, train: bool):
        layers.check_images(images, "FCN8s")
        x = images.astype(self.dtype)
        # The trunk's parameters live at the top level (features_i), as in torchvision's VGG.
        pools = vgg16_trunk(x, width=self.width, dtype=self.dtype)
        fc = self.fc_channels
        h = nn.relu(layers.conv(fc, 7, use_bias=True, dtype=self.dtype, name="classifier_0")(pools["pool5"]))
        h = nn.Dropout(self.dropout_rate, deterministic=not train)(h)
        h = nn.relu(layers.conv(fc, 1, use_bias=True, dtype=self.dtype, name="classifier_3")(h))
        h = nn.Dropout(self.dropout_rate, deterministic=not train)(h)
        zeros = nn.initializers.zeros
        c = self.num_classes

        def score(x, name):
            return layers.conv(c, 1, use_bias=True, dtype=self.dtype, kernel_init=zeros, name=name)(x)

        def up2(x, name):
            return layers.ConvTranspose(
                c, 4, 2, padding=1, dtype=self.dtype,
                kernel_init=lambda *_: jnp.asarray(layers.bilinear_kernel(4, c)), name=name,
            )(x)

        s = score(h, "score_fr")
        p4 = pools["pool4"]
        s = up2(s, "upscore2")[:, : p4.shape[1], : p4.shape[2]] + score(p4, "score_pool4")
        p3 = pools["pool3"]
        s = up2(s, "upscore_pool4")[:, : p3.shape[1], : p3.shape[2]] + score(p3, "score_pool3")
        return layers.finish_logits(s, images.shape[1:3], self.logits_stride)
