"""Tiny, fast config for tests and smoke runs (random data, 32 px, narrow widths).

    python -m xmc_gan_jax.main --config=configs/test.py --workdir=/tmp/xmc_test
"""
from configs import common


def get_config(arg=None):
  del arg
  config = common.get_base_config()
  config.batch_size = 16               # 2 sub-batches of 8: splits over 1, 2, 4 or 8 devices
  config.total_steps = 6
  config.log_every_steps = 2
  config.checkpoint_every_steps = 3
  config.sample_every_steps = 3
  config.num_sample_images = 4
  config.model.image_size = 32
  config.model.gf_dim = 4
  config.model.df_dim = 4
  config.model.z_dim = 16
  config.model.cond_size = 8
  config.text_encoder.max_length = 12
  config.eval.num_images = 8
  config.eval.batch_size = 8
  return config
