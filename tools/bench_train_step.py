"""Times the jitted train step for a config on this machine (random data, no TensorFlow).

    python tools/bench_train_step.py --config=configs/test.py
    python tools/bench_train_step.py --config=configs/coco.py:res=128 --config.batch_size=8 --steps=3
    python tools/bench_train_step.py --config=configs/shapes.py --config.model.gf_dim=16

Prints compile time, then the median seconds per step (and steps/s) over --steps timed steps after one warm-up.
The text encoder is the config's folder when it exists, otherwise a randomly initialised encoder of the same
architecture (timing does not depend on the weights).
"""
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # pylint: disable=g-import-not-at-top,g-multiple-import
import jax
import jax.numpy as jnp
from ml_collections import config_flags

from xmc_gan_jax import describe, runtime
from xmc_gan_jax.data import random_source
from xmc_gan_jax.models import text_encoder as text_encoder_lib
from xmc_gan_jax.models.text_encoder import TextEncoder, load_text_encoder

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", "configs/test.py", "Config to time.", lock_config=True)
flags.DEFINE_integer("steps", 5, "Timed steps after the warm-up step.")


def _text_encoder(config):
  try:
    return load_text_encoder(config.text_encoder.path, config.text_encoder.pooling, config.text_encoder.features)
  except FileNotFoundError:
    bert_config, _ = describe.text_encoder_architecture(config.text_encoder.path)
    module = text_encoder_lib.encoder_for_features(bert_config, config.text_encoder.features)
    ids = jnp.ones((1, config.text_encoder.max_length), jnp.int32)
    params = module.init(jax.random.key(0), ids, ids)["params"]
    return TextEncoder(module=module, params=params, vocab_path="", hidden_size=bert_config.hidden_size,
                       pooling=config.text_encoder.pooling)


def main(argv):
  del argv
  config = FLAGS.config
  run = runtime.Runtime(config, text_encoder=_text_encoder(config))
  state = run.init_state()
  batches = [random_source.random_batch(config.seed, i, config.batch_size, config.model.image_size,
                                        config.text_encoder.max_length, run.text.vocab_size)
             for i in range(2)]
  start = time.perf_counter()
  state, metrics = run.step(state, batches[0])
  jax.block_until_ready(metrics)
  compile_s = time.perf_counter() - start
  times = []
  for i in range(FLAGS.steps):
    start = time.perf_counter()
    state, metrics = run.step(state, batches[i % 2])
    jax.block_until_ready(metrics)
    times.append(time.perf_counter() - start)
  median = statistics.median(times)
  print(f"{config.model.image_size} px gf={config.model.gf_dim} df={config.model.df_dim} batch {config.batch_size} "
        f"dtype {config.model.dtype} on {jax.device_count()} {jax.devices()[0].platform} device(s), "
        f"{os.cpu_count()} cores: first step (compile) {compile_s:.1f} s, median step {median:.3f} s "
        f"({1 / median:.2f} steps/s, {config.batch_size / median:.1f} examples/s)")


if __name__ == "__main__":
  app.run(main)
