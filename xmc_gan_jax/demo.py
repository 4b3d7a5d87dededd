"""The default job: train XMC-GAN on captioned shapes within a time budget, then measure caption alignment.

    python -m xmc_gan_jax.demo --workdir=runs/demo --minutes=20      (what `make demo` runs)
    python -m xmc_gan_jax.demo --workdir=runs/ablation --config.loss.word_weight=0   (any config field)

Steps: generate the captioned-shapes dataset (first run only), train `configs/shapes.py` until the budget minus an
evaluation reserve is spent (progress lines with steps/s, time left and losses), then score the EMA generator on
held-out validation captions with the shapes verifier and compute the standard FID against validation images,
for the trained and (once, cached) the untrained generator. Writes WORKDIR/metrics.json and WORKDIR/samples.png
(a captioned grid). Re-running continues training from the last checkpoint for another budget and re-evaluates.

Budget: before training, one evaluation batch (generation, Inception, verifier) is timed on this machine and scaled
by the evaluation's number of batches (`eval_reserve_seconds`); training stops that long before the budget ends.
The untrained generator's scores are cached next to the real-image statistics (eval.stats_dir, default
~/.cache/xmc_gan_jax/stats), so a new workdir does not recompute them. Progress lines survive a closed stdout
(`make demo | head`): printing stops, logging continues, and training and evaluation go on.
"""
import hashlib
import json
import math
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
from absl import logging
import jax
import numpy as np
from ml_collections import config_flags

from xmc_gan_jax import image_grid
from xmc_gan_jax import train
from xmc_gan_jax.evaluation import alignment as alignment_lib
from xmc_gan_jax.evaluation import evaluator as evaluator_lib

ALIGN_IMAGES = 512        # held-out captions for the verifier (±0.03 at 95% for p near 0.5 needs ~1000; ±0.04 here)
FID_IMAGES = 256          # standard FID on few images is biased upwards: compare trained vs untrained at equal N
# Evaluation reserve = EVAL_FIXED_SECONDS + EVAL_MARGIN x (measured seconds per eval batch) x (eval batches); see
# eval_reserve_seconds. The margin covers the evaluator's own compilation and a machine that gets busier.
EVAL_MARGIN = 1.5
EVAL_FIXED_SECONDS = 30.0   # FID/KID maths, the sample grid, metrics.json
# What the demo changes in configs/shapes.py unless the command line sets it (--config.total_steps=N etc.).
DEMO_SETTINGS = {
    "total_steps": 10_000_000,   # the time budget ends training
    "eval.every_steps": 0,       # evaluation runs once, after training
    "log_every_steps": 25,
}
_SHAPES_CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "shapes.py")

config_flags.DEFINE_config_file("config", _SHAPES_CONFIG, "Config file (default configs/shapes.py; "
                                "configs/shapes.py:res=64 for 64 px); override fields with --config.a.b=value.",
                                lock_config=False)
flags.DEFINE_string("workdir", "runs/demo", "Run directory (checkpoints, events, metrics.json, samples.png).")
flags.DEFINE_string("data_dir", "runs/tfds", "TFDS data_dir for the generated dataset (unless --config.dataset."
                    "data_dir is set).")
flags.DEFINE_float("minutes", 20.0, "Budget for this invocation, all included.")
flags.DEFINE_float("start_time", None, "Unix time the budget started (e.g. before `make install`); default: now.")
flags.DEFINE_integer("align_images", ALIGN_IMAGES, "Held-out captions for the verifier.")
flags.DEFINE_integer("fid_images", FID_IMAGES, "Images for the FID (EMA generator).")
FLAGS = flags.FLAGS


_stdout_closed = False


def _log(message: str) -> None:
  """A progress line on stdout; once stdout is closed (a pipe into `head`), absl logging (stderr) instead."""
  global _stdout_closed
  line = f"[demo {time.strftime('%H:%M:%S')}] {message}"
  if not _stdout_closed:
    try:
      print(line, flush=True)
      return
    except (BrokenPipeError, OSError, ValueError):  # ValueError: print to a closed file
      _stdout_closed = True
      _silence_stdout()
      logging.warning("stdout is closed; progress continues in this log, training goes on.")
  logging.warning("%s", line)  # WARNING: the demo shows only warnings of its libraries (see main)


def _print(text: str) -> None:
  """Result lines: printed, or logged when stdout is closed."""
  if not _stdout_closed:
    try:
      print(text, flush=True)
      return
    except (BrokenPipeError, OSError, ValueError):
      _log(text)
      return
  logging.warning("%s", text)


def _silence_stdout() -> None:
  """Points the real stdout at /dev/null, so neither later prints nor Python's flush at exit raise."""
  try:
    if sys.stdout is sys.__stdout__ and sys.stdout is not None:
      devnull = os.open(os.devnull, os.O_WRONLY)
      os.dup2(devnull, sys.stdout.fileno())
      os.close(devnull)
  except (OSError, ValueError, AttributeError):
    pass


def eval_batches(batch_size: int, align_images: int, fid_images: int, untrained_cached: bool,
                 real_stats_cached: bool) -> int:
  """Evaluation batches after training: alignment, the trained FID, and the untrained FID and the real
  statistics unless cached (each counted as a full generation + Inception + verifier batch)."""
  fid = math.ceil(fid_images / batch_size)
  return (math.ceil(align_images / batch_size) + fid + (0 if untrained_cached else fid)
          + (0 if real_stats_cached else fid))


def eval_reserve_seconds(seconds_per_batch: float, batches: int, margin: float = EVAL_MARGIN,
                         fixed: float = EVAL_FIXED_SECONDS) -> float:
  """Seconds to keep for the evaluation: fixed + margin x batches x seconds_per_batch."""
  return fixed + margin * batches * max(seconds_per_batch, 0.0)


def training_deadline(budget_end: float, reserve: float) -> float:
  """Unix time training stops: the budget's end minus the evaluation reserve."""
  return budget_end - reserve


def measure_eval_batch(trainer, extractor, config, batch_size: int, repeats: int = 2) -> float:
  """Seconds of one steady evaluation batch (EMA generation, Inception, verifier) on this machine: the last of
  `repeats` timed runs (the first compiles what evaluation will reuse). Zero-valued parameters: a generator's
  cost does not depend on its weights, and no state needs initialising or restoring for it."""
  from xmc_gan_jax.data import shapes_verifier  # pylint: disable=g-import-not-at-top
  zeros = lambda tree, shardings: jax.tree.map(lambda a, s: jax.device_put(np.zeros(a.shape, a.dtype), s),
                                              tree, shardings)
  params = zeros(trainer.abstract_state.ema_params, trainer.state_shardings.ema_params)
  batch_stats = zeros(trainer.abstract_state.g_batch_stats, trainer.state_shardings.g_batch_stats)
  length = int(config.text_encoder.max_length)
  ids = np.zeros((batch_size, length), np.int32)
  mask = np.zeros((batch_size, length), np.int32)
  mask[:, :3] = 1
  z = evaluator_lib.eval_noise(config.seed, 0, 0, batch_size, config.model.z_dim)
  objects = {f"objects/{k}": np.full((batch_size, 3), -1, np.int32) for k in ("color", "shape", "size", "row", "col")}
  for k in objects:
    objects[k][:, 0] = 0
  objects["num_objects"] = np.ones(batch_size, np.int32)
  seconds = 0.0
  for _ in range(repeats):
    began = time.time()
    images = evaluator_lib.quantize(trainer.samples(params, batch_stats, ids, mask, z))
    extractor(images)
    shapes_verifier.score_images(images, objects)
    seconds = time.time() - began
  return seconds


def untrained_cache_path(config, stats_dir: str, fid_images: int, weights_tag: str) -> str:
  """Cache file of the untrained generator's scores: a function of the settings that decide them (model, text
  encoder, seed, dataset and evaluation batches, FID images, Inception weights)."""
  key = {"model": config.model.to_dict(), "text_encoder": config.text_encoder.to_dict(), "seed": config.seed,
         "dataset": [config.dataset.name, config.dataset.eval_split, config.dataset.get("center_crop", False)],
         "eval_batch_size": config.eval.batch_size, "fid_images": fid_images, "weights": weights_tag}
  digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]
  return os.path.join(stats_dir, f"untrained_scores_{config.dataset.name}_{fid_images}_{digest}.json")


def _read_json(path: str) -> dict | None:
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def _write_json(path: str, values: dict) -> None:
  try:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".tmp", "w") as f:
      json.dump(values, f, indent=2)
    os.replace(path + ".tmp", path)
  except OSError as e:
    logging.warning("Could not cache the untrained scores in %s: %s", path, e)


def demo_config(config, overrides: dict, data_dir: str):
  """`config` with DEMO_SETTINGS for every key the command line did not override (`overrides`: flattened
  --config.* values) and the dataset in `data_dir` unless dataset.data_dir was given."""
  config.update_from_flattened_dict({k: v for k, v in DEMO_SETTINGS.items() if k not in overrides})
  if not config.dataset.data_dir:
    config.dataset.data_dir = os.path.abspath(data_dir)
  return config


def fid_scores(evaluator, state) -> dict[str, float]:
  scores = evaluator.score(state)
  return {"ema_fid": scores["ema_fid"], "ema_kid": scores["ema_kid"]}


def main(argv) -> int:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if not FLAGS["verbosity"].present:  # the progress lines say what matters; --verbosity=0 shows every INFO line
    logging.set_verbosity(logging.WARNING)
  start_time = FLAGS.start_time or time.time()
  deadline = start_time + FLAGS.minutes * 60
  workdir = os.path.abspath(FLAGS.workdir)
  os.makedirs(workdir, exist_ok=True)
  align_images, fid_images = FLAGS.align_images, FLAGS.fid_images

  config = demo_config(FLAGS.config, config_flags.get_override_values(FLAGS["config"]), FLAGS.data_dir)
  _log(f"{jax.device_count()} {jax.devices()[0].platform} device(s), {os.cpu_count()} cores; workdir {workdir}")
  trainer = train.Trainer(config)
  evaluator = evaluator_lib.Evaluator(config, trainer, num_images=fid_images, include_raw=False)
  stats_dir = str(config.eval.stats_dir or evaluator_lib.default_stats_dir())
  untrained_path = untrained_cache_path(config, stats_dir, fid_images, evaluator.weights_tag)
  workdir_untrained = os.path.join(workdir, f"untrained_metrics_{fid_images}.json")
  untrained = _read_json(untrained_path) or _read_json(workdir_untrained)
  # One clock for stopping and for the progress lines; the dataset's first generation counts against it.
  per_batch = measure_eval_batch(trainer, evaluator.extractor, config, int(config.eval.batch_size))
  batches = eval_batches(int(config.eval.batch_size), align_images, fid_images, untrained is not None,
                         evaluator.stats_path().is_file())
  reserve = eval_reserve_seconds(per_batch, batches)
  train_deadline = training_deadline(deadline, reserve)
  _log(f"evaluation reserve {reserve / 60:.1f} min ({batches} batches x {per_batch:.2f} s measured, x{EVAL_MARGIN} "
       f"+ {EVAL_FIXED_SECONDS:.0f} s)")
  _log(f"training configs/shapes.py ({config.model.image_size} px) for "
       f"{max(train_deadline - time.time(), 0) / 60:.1f} min; TensorBoard: tensorboard --logdir {workdir}")
  start = time.time()
  start_step = trainer.checkpoint_step(workdir)

  def progress(step, scalars):
    rate = scalars.get("train/steps_per_sec", 0.0)
    left = max(0.0, train_deadline - time.time())
    if rate > 0:  # a step budget (--config.total_steps=N) may end training before the time budget
      left = min(left, (config.total_steps - step) / rate)
    _log(f"step {step:6d} | {rate:5.2f} steps/s | {left / 60:4.1f} min left | "
         f"d_loss {scalars['train/d_loss']:.3f} g_loss {scalars['train/g_loss']:.3f} | "
         f"sentence acc real {scalars.get('train/real_sentence_accuracy', 0):.2f} "
         f"fake {scalars.get('train/fake_sentence_accuracy', 0):.2f}")

  state = trainer.run(workdir, on_log=progress, deadline=train_deadline)
  seconds = time.time() - start
  steps = int(jax.device_get(state.step))

  _log(f"trained {steps - start_step} steps in {seconds / 60:.1f} min; evaluating on held-out captions")
  eval_start = time.time()
  metrics = {"steps": steps, "train_seconds": round(seconds, 1),
             "steps_per_sec": round((steps - start_step) / max(seconds, 1e-9), 3)}
  align, (grid_images, grid_captions) = alignment_lib.shapes_alignment(trainer, state, config, align_images)
  metrics.update(align)
  metrics.update(fid_scores(evaluator, state))
  if untrained is None:
    untrained = fid_scores(evaluator, trainer.init_state())
    _write_json(untrained_path, untrained)
  if not os.path.exists(workdir_untrained):
    _write_json(workdir_untrained, untrained)
  metrics.update({f"untrained_{k}": v for k, v in untrained.items()})
  metrics.update({"align_images": align_images, "fid_images": fid_images,
                  "eval_reserve_seconds": round(reserve, 1), "eval_seconds": round(time.time() - eval_start, 1)})

  with open(os.path.join(workdir, "metrics.json"), "w") as f:
    json.dump(metrics, f, indent=2, sort_keys=True)
  from PIL import Image  # pylint: disable=g-import-not-at-top
  Image.fromarray(image_grid.captioned_grid(grid_images, grid_captions, columns=4)).save(
      os.path.join(workdir, "samples.png"))
  _log("done in %.1f min. Results:" % ((time.time() - start_time) / 60))
  for key in ("ema_align_color_position", "ema_align_all", "ema_align_color_position_1obj", "ema_align_all_1obj",
              "ema_align_color_position_2obj", "ema_align_all_2obj",
              "ema_fid", "untrained_ema_fid"):
    if key in metrics:
      _print(f"  {key:32s} {metrics[key]:.3f}")
  _print(f"  metrics:      {os.path.join(workdir, 'metrics.json')}\n"
         f"  sample grid:  {os.path.join(workdir, 'samples.png')} (EMA generator, held-out captions)\n"
         f"  TensorBoard:  tensorboard --logdir {workdir}")
  return 0


if __name__ == "__main__":
  app.run(main)
