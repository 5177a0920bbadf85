"""ENet (Paszke, Chaurasia, Kim, Culurciello, "ENet: A Deep Neural Network Architecture for
Real-Time Semantic Segmentation", arXiv:1606.02147, 2016, Sec. 3, Table 1, Fig. 2).

* Initial block: a 3x3 stride-2 convolution with 13 filters concatenated with a 2x2 max-pool of
  the input (3 channels) -> 16 channels, then BatchNorm and PReLU.
* Bottleneck (Fig. 2b): main branch = identity; extension = 1x1 projection to ``out / 4``
  channels, the main convolution (regular 3x3, dilated 3x3, or asymmetric 5x1 followed by 1x5),
  1x1 expansion, each followed by BatchNorm (and PReLU except after the expansion), then spatial
  dropout (0.01 in stage 1, 0.1 afterwards); output = PReLU(main + extension). No convolution has
  a bias ("we dropped bias terms from all projections", Sec. 5.1; we drop them everywhere except
  the final full convolution, BatchNorm follows every convolution).
* Downsampling bottleneck: the projection is a 2x2 stride-2 convolution; the main branch is a
  2x2 max-pool (recording the indices) zero-padded in channels to the output width.
* Upsampling bottleneck: main branch = 1x1 convolution (+BN) to the output width followed by
  max-unpooling with the indices of the matching downsampling bottleneck; the extension's main
  convolution is a 3x3 stride-2 transposed convolution.
* Stages: 1.0 (down, 64), 4 x 1.x; 2.0 (down, 128), 2.1 regular, 2.2 dilated 2, 2.3 asymmetric 5,
  2.4 dilated 4, 2.5 regular, 2.6 dilated 8, 2.7 asymmetric 5, 2.8 dilated 16; stage 3 = stage 2
  without 2.0; 4.0 (up, 64), 4.1, 4.2; 5.0 (up, 16), 5.1; final 2x2 stride-2 transposed
  convolution to the classes ("fullconv").

PReLU slopes are per channel. The paper reports 0.37M parameters (Table 3, with 19 or 20
Cityscapes classes). Odd sizes: pools run in ceil mode and every upsampled map is cropped to the
size of the map it mirrors, so logits have the input size.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jaxseg.models import layers


class ENet(nn.Module):
    """ENet; ``width`` scales every channel count (1.0 = the paper's 16/64/128)."""

    num_classes: int
    width: float = 1.0
    dropout_stage1: float = 0.01
    dropout_rate: float = 0.1
    bn_momentum: float = 0.9
    bn_epsilon: float = 1e-3
    frozen_batchnorm: bool = False
    logits_stride: bool = False  # accepted for a uniform interface; logits are full resolution
    dtype: Any = jnp.float32

    @property
    def feature_stride(self) -> int:
        return 1

    @nn.compact
    def __call__(self, images, *, train: bool):
        layers.check_images(images, "ENet")
        dt = self.dtype

        def bn(x, name):
            return layers.model_batch_norm(self, train, name=name)(x)

        def prelu(x, name):
            return layers.PReLU(dtype=dt, name=name)(x)

        def conv(x, ch, kernel, name, **kw):
            return layers.conv(ch, kernel, dtype=dt, name=name, kernel_init=layers.he_fan_in, **kw)(x)

        def bottleneck(x, out, name, *, kind="regular", dilation=1, drop=0.1):
            inner = max(1, out // 4)
            main = x
            ext = x
            if kind == "down":
                main, idx, size = layers.max_pool_with_indices(x)
                main = jnp.pad(main, ((0, 0), (0, 0), (0, 0), (0, out - x.shape[-1])))
                ph, pw = x.shape[1] % 2, x.shape[2] % 2
                ext = jnp.pad(x, ((0, 0), (0, ph), (0, pw), (0, 0)))
                ext = conv(ext, inner, 2, f"{name}_proj", stride=2, padding=[(0, 0), (0, 0)])
            else:
                ext = conv(ext, inner, 1, f"{name}_proj")
            ext = prelu(bn(ext, f"{name}_proj_bn"), f"{name}_proj_prelu")
            if kind == "asymmetric":
                ext = conv(ext, inner, (5, 1), f"{name}_conv_a")
                ext = conv(ext, inner, (1, 5), f"{name}_conv_b")
            else:
                ext = conv(ext, inner, 3, f"{name}_conv", dilation=dilation)
            ext = prelu(bn(ext, f"{name}_conv_bn"), f"{name}_conv_prelu")
            ext = conv(ext, out, 1, f"{name}_expand")
            ext = bn(ext, f"{name}_expand_bn")
            ext = nn.Dropout(drop, broadcast_dims=(1, 2), deterministic=not train)(ext)
            y = prelu(main + ext, f"{name}_out_prelu")
            return (y, idx, size) if kind == "down" else y

        def upsampling(x, out, idx, size, name):
            inner = max(1, out // 4)
            main = bn(conv(x, out, 1, f"{name}_main"), f"{name}_main_bn")
            main = layers.max_unpool(main, idx, size)
            ext = prelu(bn(conv(x, inner, 1, f"{name}_proj"), f"{name}_proj_bn"), f"{name}_proj_prelu")
            ext = layers.ConvTranspose(inner, 3, 2, padding=1, output_padding=1, dtype=dt, name=f"{name}_conv")(ext)
            ext = ext[:, : size[0], : size[1]]
            ext = prelu(bn(ext, f"{name}_conv_bn"), f"{name}_conv_prelu")
            ext = bn(conv(ext, out, 1, f"{name}_expand"), f"{name}_expand_bn")
            ext = nn.Dropout(self.dropout_rate, broadcast_dims=(1, 2), deterministic=not train)(ext)
            return prelu(main + ext, f"{name}_out_prelu")

        w = lambda c: layers.scaled(c, self.width)  # noqa: E731
        x = images.astype(dt)
        c0 = w(16)
        if c0 <= 3:
            raise ValueError(f"ENet width {self.width} leaves {c0} <= 3 initial channels")
        a = conv(x, c0 - 3, 3, "initial_conv", stride=2)
        b = layers.max_pool(x, 2, 2, ceil_mode=True)
        x = prelu(bn(jnp.concatenate([a, b], axis=-1), "initial_bn"), "initial_prelu")

        x, idx1, size1 = bottleneck(x, w(64), "b1_0", kind="down", drop=self.dropout_stage1)
        for i in range(1, 5):
            x = bottleneck(x, w(64), f"b1_{i}", drop=self.dropout_stage1)
        x, idx2, size2 = bottleneck(x, w(128), "b2_0", kind="down", drop=self.dropout_rate)
        plan = [
            ("regular", 1), ("dilated", 2), ("asymmetric", 1), ("dilated", 4),
            ("regular", 1), ("dilated", 8), ("asymmetric", 1), ("dilated", 16),
        ]
        for stage in (2, 3):
            for i, (kind, d) in enumerate(plan, start=1):
                x = bottleneck(
                    x, w(128), f"b{stage}_{i}", kind="asymmetric" if kind == "asymmetric" else "regular",
                    dilation=d, drop=self.dropout_rate,
                )
        x = upsampling(x, w(64), idx2, size2, "b4_0")
        for i in (1, 2):
            x = bottleneck(x, w(64), f"b4_{i}", drop=self.dropout_rate)
        x = upsampling(x, c0, idx1, size1, "b5_0")
        x = bottleneck(x, c0, "b5_1", drop=self.dropout_rate)
        logits = layers.ConvTranspose(self.num_classes, 2, 2, use_bias=True, dtype=dt, name="fullconv")(x)
        logits = logits[:, : images.shape[1], : images.shape[2]]
        return logits.astype(jnp.float32)
