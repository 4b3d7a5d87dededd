"""Train step: 1 device vs 8 devices, shardings kept, non-finite guard, config errors."""
import jax
import numpy as np
import pytest

from tests.core import tiny_setup
from xmc_gan_jax import sharding
from xmc_gan_jax import runtime
from xmc_gan_jax.data import random_source


def _batch(config, step=0):
  return random_source.random_batch(config.seed, step, config.batch_size, config.model.image_size,
                                    config.text_encoder.max_length, tiny_setup.TINY_BERT.vocab_size)


def _run_steps(config, devices, num_steps=2):
  mesh = sharding.make_mesh(config.mesh, devices=devices)
  trainer = runtime.Runtime(config, mesh=mesh, text_encoder=tiny_setup.tiny_text_encoder())
  state = trainer.init_state()
  metrics = None
  for s in range(num_steps):
    state, metrics = trainer.step(state, _batch(config, s))
  return trainer, state, metrics


def _config(bn_group=0, contrastive_group=0):
  # Adam's eps is raised so that parameters whose gradient is analytically zero (conv biases before BatchNorm)
  # are not moved by +-lr from float rounding noise, which differs between 1 and 8 devices.
  return tiny_setup.tiny_config(**{"batch_size": 16, "model.batch_norm_group_size": bn_group,
                                   "loss.contrastive_group_size": contrastive_group, "optim.eps": 1e-3})


@pytest.mark.slow
@pytest.mark.parametrize("groups", [(0, 0), (2, 4)])
def test_eight_devices_equal_one_device(groups):
  config = _config(*groups)
  assert len(jax.devices()) == 8
  trainer1, state1, metrics1 = _run_steps(config, jax.devices()[:1])
  trainer8, state8, metrics8 = _run_steps(config, jax.devices())
  if groups == (0, 0):
    _check_a_step_moved_the_state(trainer1, state1, metrics1)
  for key in ("d_loss", "g_loss", "real_sentence_loss", "fake_word_loss", "image_loss"):
    np.testing.assert_allclose(metrics8[key], metrics1[key], rtol=1e-5, atol=1e-5, err_msg=key)
  flat1 = jax.tree_util.tree_leaves_with_path(jax.device_get(state1))
  flat8 = dict(jax.tree_util.tree_leaves_with_path(jax.device_get(state8)))
  for path, leaf in flat1:
    np.testing.assert_allclose(flat8[path], leaf, rtol=1e-5, atol=1e-5, err_msg=jax.tree_util.keystr(path))
  # The state keeps the shardings it was created with.
  for leaf, expected in zip(jax.tree.leaves(state8), jax.tree.leaves(trainer8.state_shardings)):
    assert leaf.sharding.is_equivalent_to(expected, leaf.ndim)
    assert len(leaf.sharding.device_set) == 8


def _check_a_step_moved_the_state(trainer, state, metrics):
  """Two steps from init: finite metrics, G moved, EMA moved by less than G."""
  assert int(state.step) == 2
  for key in ("d_loss", "g_loss", "real_sentence_accuracy", "fake_word_entropy", "g_grad_norm", "nonfinite"):
    assert np.isfinite(metrics[key]), key
  assert float(metrics["nonfinite"]) == 0.0
  init = trainer.init_state()
  moved = jax.tree.map(lambda a, b: float(np.abs(np.asarray(a) - np.asarray(b)).max()), state.g_params,
                       init.g_params)
  assert max(jax.tree.leaves(moved)) > 0
  # EMA moved by (1 - decay) of the G update only.
  ema_delta = jax.tree.map(lambda e, i: np.abs(np.asarray(e) - np.asarray(i)).max(), state.ema_params,
                           init.ema_params)
  assert 0 < max(jax.tree.leaves(ema_delta)) < max(jax.tree.leaves(moved))


@pytest.mark.slow
def test_bfloat16_compute_keeps_float32_params():
  config = tiny_setup.tiny_config(**{"model.dtype": "bfloat16"})
  _, state, metrics = _run_steps(config, jax.devices()[:1], num_steps=1)
  for key in ("d_loss", "g_loss", "fake_word_loss"):
    assert metrics[key].dtype == np.float32 and np.isfinite(metrics[key]), key
  for tree in (state.g_params, state.d_params, state.ema_params):
    assert {leaf.dtype for leaf in jax.tree.leaves(tree)} == {np.dtype(np.float32)}


@pytest.mark.slow
def test_non_finite_step_leaves_state_unchanged():
  config = _config()  # the program of test_eight_devices_equal_one_device's 1-device run: a compilation cache hit
  mesh = sharding.make_mesh(config.mesh, devices=jax.devices()[:1])
  trainer = runtime.Runtime(config, mesh=mesh, text_encoder=tiny_setup.tiny_text_encoder())
  state = trainer.init_state()
  before = jax.device_get(state)
  poisoned = jax.tree.map(lambda x: x * np.nan, trainer.text_params)
  new_state, metrics = trainer.train_step(state, poisoned, trainer.device_batch(_batch(config)), trainer.rng)
  assert float(metrics["nonfinite"]) == 1.0
  after = jax.device_get(new_state)
  assert int(after.step) == 1
  for a, b in zip(jax.tree.leaves(after.g_params), jax.tree.leaves(before.g_params)):
    np.testing.assert_array_equal(a, b)
  for a, b in zip(jax.tree.leaves(after.d_params), jax.tree.leaves(before.d_params)):
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("overrides,match", [
    ({"batch_size": 9}, "d_steps_per_g_step"),
    ({"batch_size": 12}, "cannot be split evenly over the 8 devices"),
    ({"batch_size": 16, "model.batch_norm_group_size": 3}, "batch_norm_group_size"),
    ({"batch_size": 16, "loss.contrastive_group_size": 5}, "contrastive_group_size"),
    ({"dataset.name": "imagenet"}, "dataset.name"),
])
def test_config_errors(overrides, match):
  config = tiny_setup.tiny_config(**overrides)
  with pytest.raises(ValueError, match=match):
    runtime.Runtime(config, mesh=sharding.make_mesh(config.mesh), text_encoder=tiny_setup.tiny_text_encoder())
