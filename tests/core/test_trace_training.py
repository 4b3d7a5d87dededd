"""tools/trace_training.py's diagnostics: image statistics and per-term brightness pushes, re-derived directly."""
import importlib.util
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.core import tiny_setup
from xmc_gan_jax import losses, steps, train
from xmc_gan_jax.data import random_source

ROOT = pathlib.Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("trace_training", ROOT / "tools" / "trace_training.py")
trace_training = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(trace_training)
N = 4


def _setup(**overrides):
  config = tiny_setup.tiny_config(**overrides)
  trainer = train.Trainer(config, mesh=None, text_encoder=tiny_setup.tiny_text_encoder())
  batch = random_source.random_batch(config.seed, 0, config.batch_size, config.model.image_size,
                                     config.text_encoder.max_length, tiny_setup.TINY_BERT.vocab_size)
  return trainer, trainer.init_state(), batch


def _fake(trainer, state, batch):
  ids, mask = jnp.asarray(batch["token_ids"][:N]), jnp.asarray(batch["token_mask"][:N])
  words, sentence = steps.text_features(trainer.modules, trainer.text_params, ids, mask)
  z = jax.random.normal(jax.random.key(1), (N, trainer.modules.z_dim))
  fake, _ = steps.generate(trainer.modules, state.g_params, state.g_batch_stats, z, sentence, words, mask, train=True)
  return fake, words, sentence, mask


def test_image_statistics_and_adversarial_push():
  trainer, state, batch = _setup()
  result = {k: float(v) for k, v in trace_training._diagnostics(trainer, batch, N, True)(state).items()}
  assert {"push_adv", "push_sentence", "push_word", "push_image"} <= set(result)
  fake, _, sentence, _ = _fake(trainer, state, batch)
  fake = np.asarray(fake)
  np.testing.assert_allclose(result["mean"], fake.mean(), rtol=1e-5)
  np.testing.assert_allclose(result["white"], np.mean(fake > 0.98), atol=1e-7)
  np.testing.assert_allclose(result["black"], np.mean(fake < 0.02), atol=1e-7)

  # The adversarial push from its own gradient (the tool splits one vjp by one-hot cotangents).
  real = steps.to_unit_range(jnp.asarray(batch["image"][:N]))
  def adv(images):
    out, _ = steps.discriminate(trainer.modules, state.d_params, state.d_sn_stats, jnp.concatenate([real, images]),
                                jnp.concatenate([sentence, sentence]), train=False)
    return losses.hinge_g_loss(out["logits"][N:])
  g = np.asarray(jax.grad(adv)(jnp.asarray(fake)))
  np.testing.assert_allclose(result["push_adv"], g.mean() / np.abs(g).mean(), rtol=1e-4, atol=1e-6)
  assert all(-1.0 <= v <= 1.0 for k, v in result.items() if k.startswith("push_"))


@pytest.mark.parametrize("with_push", [False, True])
def test_disabled_terms_are_not_traced(with_push):
  trainer, state, batch = _setup(**{"loss.image_weight": 0.0, "loss.word_weight": 0.0})
  keys = set(trace_training._diagnostics(trainer, batch, N, with_push)(state))
  expected = {"mean", "white", "black"} | ({"push_adv", "push_sentence"} if with_push else set())
  assert keys == expected
