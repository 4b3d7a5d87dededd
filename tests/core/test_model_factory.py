"""model_factory.build_modules passes every config.model option to the Linen modules it builds."""
import numpy as np
import pytest

from tests.core import tiny_setup
from xmc_gan_jax import model_factory


@pytest.mark.parametrize("stem_sees_sentence,level", [(False, 0.5), (True, 0.78)])
def test_model_options_come_from_config(stem_sees_sentence, level):
  config = tiny_setup.tiny_config(**{"model.stem_sees_sentence": stem_sees_sentence,
                                     "model.initial_output_level": level,
                                     "model.use_word_attention": not stem_sees_sentence})
  text = tiny_setup.tiny_text_encoder()
  modules = model_factory.build_modules(config, text.module, text.hidden_size)
  g = modules.generator
  assert (g.stem_sees_sentence, g.initial_output_level) == (stem_sees_sentence, level)
  assert g.use_word_attention == (not stem_sees_sentence)
  assert (g.image_size, g.gf_dim, g.cond_size) == (config.model.image_size, config.model.gf_dim,
                                                   config.model.cond_size)
  assert g.channel_multipliers == ()
  d = modules.discriminator
  assert (d.image_size, d.df_dim, d.cond_size, d.text_dim) == (config.model.image_size, config.model.df_dim,
                                                               config.model.cond_size, text.hidden_size)


def test_text_features_come_from_config():
  from xmc_gan_jax import train  # pylint: disable=import-outside-toplevel
  from xmc_gan_jax.models import text_encoder  # pylint: disable=import-outside-toplevel
  trainer = train.Trainer(tiny_setup.tiny_config(**{"text_encoder.features": "random_words"}))
  assert trainer.text.module.config.num_hidden_layers == 0
  table = trainer.text.params["embeddings"]["word_embeddings"]["embedding"]
  expected = np.random.default_rng(text_encoder.RANDOM_WORDS_SEED).standard_normal(table.shape, dtype=np.float32)
  np.testing.assert_array_equal(np.asarray(table), expected)
  with pytest.raises(ValueError, match="text_encoder.features='glove' is not one of"):
    train.Trainer(tiny_setup.tiny_config(**{"text_encoder.features": "glove"}))


def test_generator_channel_multipliers_come_from_config():
  config = tiny_setup.tiny_config(**{"model.g_channel_multipliers": (3, 1, 2)})
  text = tiny_setup.tiny_text_encoder()
  assert model_factory.build_modules(config, text.module, text.hidden_size).generator.channel_multipliers == (3, 1, 2)
