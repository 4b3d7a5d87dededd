"""`make demo --set KEY=VALUE` (demo.build_config): values take the type of the config field they replace."""
import argparse

import pytest

from xmc_gan_jax import demo


def _config(*sets):
  return demo.build_config(argparse.Namespace(res=32, data_dir="runs/tfds", set=list(sets)))


def test_overrides_take_the_field_type():
  config = _config("loss.word_weight=0", "optim.d_steps_per_g_step=1", "model.use_word_attention=false",
                   "text_encoder.features=contextual", "model.g_channel_multipliers=4, 2,1")
  assert config.loss.word_weight == 0.0 and isinstance(config.loss.word_weight, float)
  assert config.optim.d_steps_per_g_step == 1 and isinstance(config.optim.d_steps_per_g_step, int)
  assert config.model.use_word_attention is False
  assert config.text_encoder.features == "contextual"
  assert config.model.g_channel_multipliers == (4, 2, 1)
  assert _config("model.g_channel_multipliers=").model.g_channel_multipliers == ()


@pytest.mark.parametrize("assignment,message", [
    ("model.no_such_key=1", "existing config key"),
    ("loss.word_weight", "existing config key"),
    ("model.g_channel_multipliers=8,x,2", "comma-separated integers"),
])
def test_bad_overrides_raise(assignment, message):
  with pytest.raises(ValueError, match=message):
    _config(assignment)
