"""The models' entry points under the error contract of the losses and metrics: TypeError for a
wrong type or dtype, ValueError for a wrong shape or a bad static argument, named."""

import jax.numpy as jnp
import numpy as np
import pytest

from jaxseg import models


@pytest.fixture(scope="module")
def unet():
  model = models.create("unet_small", 3, base_channels=4, depth=2)
  return model, models.init_variables(model, 0, (1, 16, 16, 3))


def test_images_that_are_not_an_array_or_empty(unet):
  model, variables = unet
  with pytest.raises(TypeError, match="images must be an array"):
    model.apply(variables, np.zeros((1, 16, 16, 3)).tolist(), train=False)
  with pytest.raises(TypeError, match="floating"):
    model.apply(variables, jnp.zeros((1, 16, 16, 3), jnp.int32), train=False)
  with pytest.raises(ValueError, match="H, W >= 1"):
    model.apply(variables, jnp.zeros((1, 0, 16, 3)), train=False)
  # The same rule in a model that had returned an empty output.
  enet = models.create("enet_small", 3)
  with pytest.raises(ValueError, match="H, W >= 1"):
    enet.init(__import__("jax").random.key(0), jnp.zeros((1, 16, 0, 3)), train=False)


def test_static_arguments_are_checked_where_they_are_given():
  with pytest.raises(ValueError, match="output_stride must be 8, 16 or 32"):
    models.create("deeplabv3plus_resnet18_small", 3, output_stride=7)
  model = models.create("unet_small", 3, base_channels=4, depth=2)
  for seed in (1.5, None, True):
    with pytest.raises(ValueError, match="seed must be an int"):
      models.init_variables(model, seed, (1, 16, 16, 3))
  with pytest.raises(ValueError, match="image_shape"):
    models.init_variables(model, 0, (16, 16, 3))


def test_downsample_labels_contract():
  labels = jnp.zeros((2, 9, 9), jnp.int32)
  assert models.downsample_labels(labels, 4).shape == (2, 3, 3)
  with pytest.raises(TypeError, match="integer class ids"):
    models.downsample_labels(labels.astype(jnp.float32), 4)
  with pytest.raises(ValueError, match="stride must be an int >= 1"):
    models.downsample_labels(labels, 2.5)
  with pytest.raises(ValueError, match=r"\[B, H, W\]"):
    models.downsample_labels(labels[0], 2)
