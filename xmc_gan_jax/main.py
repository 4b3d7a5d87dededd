"""Entry point: `python -m xmc_gan_jax.main --config=configs/test.py --workdir=DIR [--mode=train|eval|describe]`.

train     trains (resuming from DIR/checkpoints), with TensorBoard events in DIR.
eval      follows DIR's checkpoints and scores each new one (FID/KID), appending to DIR/scores.csv.
describe  prints parameter counts, FLOPs per train step and compiled memory for the config's mesh; no training.
"""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags

FLAGS = flags.FLAGS


class _QuietLibraries(logging.logging.Filter):
  """Drops INFO/DEBUG chatter of orbax (dozens of lines per checkpoint); keeps its warnings and errors."""

  def filter(self, record):
    return record.levelno >= logging.logging.WARNING or "/orbax/" not in record.pathname
config_flags.DEFINE_config_file("config", None, "Config file, e.g. configs/shapes.py or configs/coco.py:res=128.",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Directory (local or gs://) for checkpoints, TensorBoard events and scores.")
flags.DEFINE_enum("mode", "train", ["train", "eval", "describe"], "What to do.")
flags.DEFINE_bool("multihost", False, "Call jax.distributed.initialize() (multi-host TPU/GPU runs).")
flags.mark_flags_as_required(["config"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  logging.get_absl_handler().addFilter(_QuietLibraries())
  jax.config.update("jax_compilation_cache_dir", os.environ.get(
      "JAX_COMPILATION_CACHE_DIR", os.path.join(os.path.expanduser("~"), ".cache", "xmc_gan_jax", "xla")))
  if FLAGS.multihost:
    jax.distributed.initialize()
  logging.info("JAX process %d/%d, local devices %s", jax.process_index(), jax.process_count(),
               jax.local_devices())
  config = FLAGS.config
  if FLAGS.mode == "describe":
    from xmc_gan_jax import describe  # pylint: disable=g-import-not-at-top
    print(describe.describe(config))
    return
  if not FLAGS.workdir:
    raise app.UsageError("--workdir is required for --mode=train and --mode=eval.")
  if FLAGS.mode == "train":
    from xmc_gan_jax import train  # pylint: disable=g-import-not-at-top
    train.train_and_evaluate(config, FLAGS.workdir)
  else:
    from xmc_gan_jax.evaluation import evaluator  # pylint: disable=g-import-not-at-top
    evaluator.follow_checkpoints(config, FLAGS.workdir)


if __name__ == "__main__":
  app.run(main)
