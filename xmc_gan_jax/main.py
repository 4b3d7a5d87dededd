"""Entry point: `python -m xmc_gan_jax.main --config=configs/test.py --workdir=DIR [--mode=train|eval|describe]`.

train     trains (resuming from DIR/checkpoints), with TensorBoard events in DIR and periodic evaluation.
eval      follows DIR's checkpoints and scores each new one (FID/KID), appending to DIR/scores.csv.
describe  prints parameter counts, FLOPs per train step and compiled memory for the config's mesh; no training.

Multi-host: `--multihost` calls `jax.distributed.initialize`, which detects TPU VMs and SLURM clusters by itself;
elsewhere pass `--coordinator_address=HOST:PORT --num_processes=N --process_id=I` (or the environment variables
XMC_COORDINATOR_ADDRESS, XMC_NUM_PROCESSES, XMC_PROCESS_ID).
"""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
from absl import logging
import jax
import ml_collections
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
flags.DEFINE_bool("multihost", False, "Join a multi-process run through jax.distributed.initialize().")
flags.DEFINE_string("coordinator_address", os.environ.get("XMC_COORDINATOR_ADDRESS"),
                    "HOST:PORT of process 0 (with --multihost, where JAX cannot detect the cluster).")
flags.DEFINE_integer("num_processes", int(os.environ.get("XMC_NUM_PROCESSES", "0")) or None,
                     "Number of processes (with --multihost and --coordinator_address).")
flags.DEFINE_integer("process_id", int(os.environ["XMC_PROCESS_ID"]) if "XMC_PROCESS_ID" in os.environ else None,
                     "This process's index, 0 .. num_processes - 1 (with --coordinator_address).")
flags.DEFINE_enum("expect_platform", None, ["tpu", "gpu", "cpu"],
                  "Refuse to start unless JAX's default backend is this platform (set by the launch scripts).")
flags.DEFINE_string("topology", None, "With --mode=describe: compile ahead of time for this Cloud TPU slice, e.g. "
                    "v5e:2x2, v4:2x2x1 (v4-8), v5e:4x4; needs `make install-tpu-aot`, no TPU (docs/tpu_aot.md).")
flags.DEFINE_bool("max_batch", False, "With --mode=describe --topology: bisect the largest per-chip batch that fits.")
flags.mark_flags_as_required(["config"])


def initialize_distributed(coordinator_address: str | None, num_processes: int | None,
                           process_id: int | None) -> None:
  """`jax.distributed.initialize` with the explicit settings given, or JAX's cluster detection with none."""
  explicit = (coordinator_address, num_processes, process_id)
  if any(v is not None for v in explicit) and any(v is None for v in explicit):
    raise app.UsageError("--coordinator_address, --num_processes and --process_id go together: give all three "
                         "(or none, to let JAX detect a TPU VM or SLURM cluster).")
  if coordinator_address is None:
    jax.distributed.initialize()
  else:
    if not 0 <= process_id < num_processes:
      raise app.UsageError(f"--process_id={process_id} must be in [0, --num_processes={num_processes}).")
    jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=num_processes,
                               process_id=process_id)


def check_platform(expected: str | None) -> None:
  """Raises UsageError when JAX's default backend is not `expected` (e.g. a TPU VM whose TPU runtime is broken
  would otherwise train on its CPU)."""
  if expected and jax.default_backend() != expected:
    raise app.UsageError(
        f"--expect_platform={expected}, but JAX runs on {jax.default_backend()} ({jax.devices()[:2]}...). Check that "
        f"jax[{expected if expected != 'gpu' else 'cuda12'}] is installed and the accelerator is free "
        "(another process holding the TPU, a missing driver).")


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str):
  """Writes WORKDIR/config.json (process 0), trains, evaluates every `config.eval.every_steps`."""
  from etils import epath  # pylint: disable=g-import-not-at-top
  from xmc_gan_jax import train  # pylint: disable=g-import-not-at-top
  from xmc_gan_jax.evaluation import evaluator as evaluator_lib  # pylint: disable=g-import-not-at-top
  trainer = train.Trainer(config)
  if jax.process_index() == 0:
    path = epath.Path(workdir)
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(config.to_json_best_effort(indent=2))
  evaluator = evaluator_lib.Evaluator(config, trainer) if config.eval.every_steps > 0 else None
  return trainer.run(workdir, evaluator=evaluator)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  logging.get_absl_handler().addFilter(_QuietLibraries())
  # A per-host cache under --multihost lets one process load a cached program while another recompiles for
  # minutes, and the collectives time out: there, only a cache the user shares between hosts is used.
  cache_dir = os.environ.get("JAX_COMPILATION_CACHE_DIR")
  if cache_dir is None and not FLAGS.multihost:
    cache_dir = os.path.join(os.path.expanduser("~"), ".cache", "xmc_gan_jax", "xla")
  if cache_dir:
    jax.config.update("jax_compilation_cache_dir", cache_dir)
  if FLAGS.multihost:
    initialize_distributed(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id)
  check_platform(FLAGS.expect_platform)
  logging.info("JAX process %d/%d, local devices %s", jax.process_index(), jax.process_count(),
               jax.local_devices())
  config = FLAGS.config
  if FLAGS.mode == "describe":
    from xmc_gan_jax import describe  # pylint: disable=g-import-not-at-top
    print(describe.describe(config, topology=FLAGS.topology, max_batch=FLAGS.max_batch))
    return
  if not FLAGS.workdir:
    raise app.UsageError("--workdir is required for --mode=train and --mode=eval.")
  if FLAGS.mode == "train":
    train_and_evaluate(config, FLAGS.workdir)
  else:
    from xmc_gan_jax.evaluation import follow  # pylint: disable=g-import-not-at-top
    follow.follow_checkpoints(config, FLAGS.workdir)


if __name__ == "__main__":
  app.run(main)
