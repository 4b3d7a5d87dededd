"""`make demo`'s config: configs/shapes.py through ml_collections' --config flags, plus the demo's own settings
wherever the command line does not set them."""
import os
import subprocess
import sys

from absl import flags
from ml_collections import config_flags

from configs import shapes
from xmc_gan_jax import demo

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _parse(monkeypatch, *args):
  """demo's --config flag parsed from `args` in a fresh FlagValues: (config, flattened overrides)."""
  argv = ["demo", *args]
  monkeypatch.setattr(sys, "argv", argv)  # config_flags reads the overrides from sys.argv
  values = flags.FlagValues()
  config_flags.DEFINE_config_file("config", demo._SHAPES_CONFIG, "", flag_values=values, lock_config=False)
  values(argv)
  return values.config, config_flags.get_override_values(values["config"])


def test_demo_settings_apply_where_the_command_line_is_silent(tmp_path, monkeypatch):
  config, overrides = _parse(monkeypatch, "--config.loss.word_weight=0", "--config.total_steps=7")
  config = demo.demo_config(config, overrides, str(tmp_path / "tfds"))
  assert config.loss.word_weight == 0.0 and isinstance(config.loss.word_weight, float)
  assert config.total_steps == 7                                   # the user's, not DEMO_SETTINGS'
  assert config.eval.every_steps == 0 and config.log_every_steps == 25
  assert config.dataset.data_dir == str(tmp_path / "tfds")
  assert config.optim.g_lr == shapes.get_config().optim.g_lr       # the rest is configs/shapes.py


def test_variant_tuples_and_data_dir(tmp_path, monkeypatch):
  config, overrides = _parse(monkeypatch, f"--config={demo._SHAPES_CONFIG}:res=64", "--config.model.g_channel_multipliers=(4,2,1)",
                             f"--config.dataset.data_dir={tmp_path}")
  config = demo.demo_config(config, overrides, "ignored")
  assert config.model.image_size == 64 and config.model.g_channel_multipliers == (4, 2, 1)
  assert config.dataset.data_dir == str(tmp_path) and config.total_steps == demo.DEMO_SETTINGS["total_steps"]


def test_unknown_key_is_refused():
  result = subprocess.run([sys.executable, "-m", "xmc_gan_jax.demo", "--config.model.no_such_key=1",
                           "--minutes=0"], cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert result.returncode != 0 and "no_such_key" in result.stderr
