"""Train step: 1 device vs 8 devices, shardings kept, non-finite guard, swapped- and exchanged-caption negatives,
config errors."""
import dataclasses

import jax
import numpy as np
import pytest

from tests.core import tiny_setup
from xmc_gan_jax import sharding
from xmc_gan_jax import train
from xmc_gan_jax.data import random_source


def _batch(config, step=0):
  return random_source.random_batch(config.seed, step, config.batch_size, config.model.image_size,
                                    config.text_encoder.max_length, tiny_setup.TINY_BERT.vocab_size)


def _run_steps(config, devices, num_steps=2, text_encoder=None, batch_fn=None):
  mesh = sharding.make_mesh(config.mesh, devices=devices)
  trainer = train.Trainer(config, mesh=mesh, text_encoder=text_encoder or tiny_setup.tiny_text_encoder())
  state = trainer.init_state()
  metrics = None
  for s in range(num_steps):
    state, metrics = trainer.step(state, (batch_fn or _batch)(config, s))
  return trainer, state, metrics


SWAP_WORDS = "w10/w11|w12|w13, w20|w21"       # word pieces 10-13 and 20-21 of the vocabulary below


def _swap_encoder(tmp_path):
  vocab = tmp_path / "vocab.txt"
  vocab.write_text("".join(f"w{i}\n" for i in range(tiny_setup.TINY_BERT.vocab_size)))
  return dataclasses.replace(tiny_setup.tiny_text_encoder(), vocab_path=str(vocab))


def _swap_batch(config, step=0):
  """Random captions, half of them with a swappable word at position 1."""
  batch = _batch(config, step)
  batch["token_ids"][::2, 1] = np.array([10, 12, 21, 13] * 4)[:config.batch_size // 2]
  return batch


def _exchange_batch(config, step=0):
  """_swap_batch with, in the same half, a word of the same family and another value at position 3."""
  batch = _swap_batch(config, step)
  batch["token_ids"][::2, 3] = np.array([12, 13, 20, 11] * 4)[:config.batch_size // 2]
  return batch


@pytest.mark.parametrize("groups", [(0, 0, 0, False), (2, 4, 0, False), (0, 0, 2, False), (0, 4, 0, True)])
def test_eight_devices_equal_one_device(groups, tmp_path):
  bn_group, contrastive_group, swaps, exchange = groups
  # Adam's eps is raised so that parameters whose gradient is analytically zero (conv biases before BatchNorm)
  # are not moved by +-lr from float rounding noise, which differs between 1 and 8 devices.
  config = tiny_setup.tiny_config(**{"batch_size": 16, "model.batch_norm_group_size": bn_group,
                                     "loss.contrastive_group_size": contrastive_group, "optim.eps": 1e-3,
                                     "loss.swap_negatives": swaps, "loss.swap_words": SWAP_WORDS,
                                     "loss.exchange_negatives": exchange})
  assert len(jax.devices()) == 8
  setup = dict(text_encoder=_swap_encoder(tmp_path), batch_fn=_exchange_batch) if swaps or exchange else {}
  _, state1, metrics1 = _run_steps(config, jax.devices()[:1], **setup)
  trainer8, state8, metrics8 = _run_steps(config, jax.devices(), **setup)
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


def test_step_changes_state_and_reports_metrics():
  config = tiny_setup.tiny_config()
  trainer, state, metrics = _run_steps(config, jax.devices()[:1], num_steps=1)
  assert int(state.step) == 1
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


def test_bfloat16_compute_keeps_float32_params():
  config = tiny_setup.tiny_config(**{"model.dtype": "bfloat16"})
  _, state, metrics = _run_steps(config, jax.devices()[:1], num_steps=1)
  for key in ("d_loss", "g_loss", "fake_word_loss"):
    assert metrics[key].dtype == np.float32 and np.isfinite(metrics[key]), key
  for tree in (state.g_params, state.d_params, state.ema_params):
    assert {leaf.dtype for leaf in jax.tree.leaves(tree)} == {np.dtype(np.float32)}


def test_non_finite_step_leaves_state_unchanged():
  config = tiny_setup.tiny_config()
  mesh = sharding.make_mesh(config.mesh, devices=jax.devices()[:1])
  trainer = train.Trainer(config, mesh=mesh, text_encoder=tiny_setup.tiny_text_encoder())
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


def test_swap_negatives_enter_the_sentence_loss_only(tmp_path):
  """Step 1's metrics come from the initial params: swapped captions add negatives to the sentence-image loss
  (it grows, on both sides) and change nothing else."""
  metrics = {}
  for swaps in (0, 2):
    config = tiny_setup.tiny_config(**{"loss.swap_negatives": swaps, "loss.swap_words": SWAP_WORDS})
    trainer = train.Trainer(config, mesh=sharding.make_mesh(config.mesh, jax.devices()[:1]),
                            text_encoder=_swap_encoder(tmp_path))
    _, metrics[swaps] = trainer.step(trainer.init_state(), _swap_batch(config))
  for side in ("real", "fake"):
    assert float(metrics[2][f"{side}_sentence_loss"]) > float(metrics[0][f"{side}_sentence_loss"]) + 1e-4
    assert 0.0 <= float(metrics[2][f"{side}_sentence_swap_accuracy"]) <= 1.0
    assert f"{side}_sentence_swap_accuracy" not in metrics[0]
    np.testing.assert_allclose(metrics[2][f"{side}_word_loss"], metrics[0][f"{side}_word_loss"], rtol=1e-4)
  for key in ("image_loss", "g_adv_loss", "d_hinge_loss"):
    np.testing.assert_allclose(metrics[2][key], metrics[0][key], rtol=1e-4, atol=2e-3, err_msg=key)


def test_exchange_negatives_enter_the_word_loss_only(tmp_path):
  """Step 1's metrics: exchanged captions add a negative to each image's word-region loss (it grows, on both
  sides) and change nothing else."""
  metrics = {}
  for exchange in (False, True):
    config = tiny_setup.tiny_config(**{"loss.exchange_negatives": exchange, "loss.swap_words": SWAP_WORDS})
    trainer = train.Trainer(config, mesh=sharding.make_mesh(config.mesh, jax.devices()[:1]),
                            text_encoder=_swap_encoder(tmp_path))
    _, metrics[exchange] = trainer.step(trainer.init_state(), _exchange_batch(config))
  for side in ("real", "fake"):
    assert float(metrics[True][f"{side}_word_loss"]) > float(metrics[False][f"{side}_word_loss"]) + 1e-4
    assert 0.0 <= float(metrics[True][f"{side}_word_exchange_accuracy"]) <= 1.0
    assert f"{side}_word_exchange_accuracy" not in metrics[False]
    np.testing.assert_allclose(metrics[True][f"{side}_sentence_loss"], metrics[False][f"{side}_sentence_loss"],
                               rtol=1e-4)
  for key in ("image_loss", "g_adv_loss", "d_hinge_loss"):
    np.testing.assert_allclose(metrics[True][key], metrics[False][key], rtol=1e-4, atol=2e-3, err_msg=key)


def test_swap_negatives_need_the_vocabulary():
  config = tiny_setup.tiny_config(**{"loss.swap_negatives": 1, "loss.swap_words": SWAP_WORDS})
  with pytest.raises(FileNotFoundError, match="vocabulary"):
    train.Trainer(config, mesh=sharding.make_mesh(config.mesh), text_encoder=tiny_setup.tiny_text_encoder())


@pytest.mark.parametrize("overrides,match", [
    ({"batch_size": 9}, "d_steps_per_g_step"),
    ({"batch_size": 12}, "cannot be split evenly over the 8 devices"),
    ({"batch_size": 16, "model.batch_norm_group_size": 3}, "batch_norm_group_size"),
    ({"batch_size": 16, "loss.contrastive_group_size": 5}, "contrastive_group_size"),
    ({"dataset.name": "imagenet"}, "dataset.name"),
    ({"loss.swap_negatives": -1}, "swap_negatives must be an int"),
    ({"loss.swap_negatives": 1}, "needs loss.swap_words"),
    ({"loss.swap_negatives": 1, "loss.swap_words": SWAP_WORDS, "loss.sentence_weight": 0.0}, "sentence_weight=0"),
    ({"loss.exchange_negatives": True}, "needs loss.swap_words"),
    ({"loss.exchange_negatives": True, "loss.swap_words": SWAP_WORDS, "loss.word_weight": 0.0}, "word_weight=0"),
])
def test_config_errors(overrides, match):
  config = tiny_setup.tiny_config(**overrides)
  with pytest.raises(ValueError, match=match):
    train.Trainer(config, mesh=sharding.make_mesh(config.mesh), text_encoder=tiny_setup.tiny_text_encoder())
