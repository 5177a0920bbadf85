"""The auxiliary head's loss (torchvision's DeepLab-v3 / FCN recipe) in the train step, and the
config checks of ``aux_loss_weight``."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from jaxseg import models
from jaxseg import sharding
from jaxseg.losses import cross_entropy
from jaxseg.training import loss_setup
from jaxseg.training import steps
from jaxseg.training.initialization import ConfigError
from jaxseg.training.state import TrainState


def test_train_step_adds_the_weighted_auxiliary_loss():
  # One block per stage: the smallest network with both heads (its compile dominates the test).
  model = models.create("deeplabv3_resnet18_small", 3, aux_head=True, dropout_rate=0.0,
                        stage_sizes=(1, 1, 1, 1))
  variables = models.init_variables(model, 0, (2, 24, 24, 3))
  rng = np.random.default_rng(0)
  images = jnp.asarray(rng.normal(size=(2, 24, 24, 3)), jnp.float32)
  labels = jnp.asarray(rng.integers(0, 3, size=(2, 24, 24)), jnp.int32)
  labels = labels.at[:, :3].set(255)
  mesh = sharding.create_mesh(jax.devices()[:1])
  state = TrainState.create(apply_fn=model.apply, params=variables["params"],
                            batch_stats=variables["batch_stats"], tx=optax.sgd(0.0),
                            rng=jax.random.key(0))
  # The reference: both heads' outputs of the same training forward pass.
  forward = jax.jit(lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"],
                                             rngs={"dropout": jax.random.key(1)})[0])
  out = forward(variables, images)
  assert set(out) == {"out", "aux"}
  main, aux = cross_entropy(out["out"], labels), cross_entropy(out["aux"], labels)
  assert abs(float(main) - float(aux)) > 1e-3  # the two heads differ: the weight shows
  step = steps.make_train_step(mesh, loss_fn=cross_entropy, aux_loss_weight=0.5, donate=False)
  _, metrics = step(state, {"image": images, "label": labels})
  # The main head has no dropout (dropout_rate=0): its loss is the reference's (1e-4: the step's
  # compiled forward pass rounds differently). The auxiliary head keeps torchvision's dropout
  # 0.1, drawn from the step's key: its loss is near the reference's, not equal.
  loss, aux_loss = float(metrics["loss"]), float(metrics["aux_loss"])
  np.testing.assert_allclose(loss - 0.5 * aux_loss, float(main), rtol=1e-4)
  np.testing.assert_allclose(aux_loss, float(aux), rtol=0.25)  # measured: 6% apart
  assert loss - float(main) > 0.4 * float(aux)


@pytest.mark.parametrize("weight, aux_head, message", [
    (0.5, False, "needs a model with an auxiliary head"),
    (0.0, True, "trained by nothing"),
    (-1.0, True, ">= 0"),
])
def test_aux_loss_weight_and_aux_head_must_agree(weight, aux_head, message):
  config = ml_collections.ConfigDict({"aux_loss_weight": weight,
                                      "model": {"options": {"aux_head": aux_head}}})
  with pytest.raises(ConfigError, match=message):
    loss_setup.check_aux_loss(config)
  config.aux_loss_weight, config.model.options.aux_head = 0.5, True
  assert loss_setup.check_aux_loss(config) == 0.5
  # A config that builds a loss only (no model): no auxiliary head, weight 0.
  assert loss_setup.check_aux_loss(ml_collections.ConfigDict({"loss": {}})) == 0.0
