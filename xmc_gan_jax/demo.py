"""The default job: train XMC-GAN on captioned shapes within a time budget, then measure caption alignment.

    python -m xmc_gan_jax.demo --workdir=runs/demo --minutes=20      (what `make demo` runs)
    python -m xmc_gan_jax.demo --workdir=runs/ablation --config.loss.word_weight=0   (any config field)

Steps: generate the captioned-shapes dataset (first run only), train `configs/shapes.py` until the budget minus an
evaluation reserve is spent (progress lines with steps/s, time left and losses), then score the EMA generator on
held-out validation captions with the shapes verifier and compute the standard FID against validation images,
for the trained and (once, cached) the untrained generator. Writes WORKDIR/metrics.json and WORKDIR/samples.png
(a captioned grid). Re-running continues training from the last checkpoint for another budget and re-evaluates.
"""
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
import jax
from ml_collections import config_flags

from xmc_gan_jax import image_grid
from xmc_gan_jax import train
from xmc_gan_jax.evaluation import alignment as alignment_lib
from xmc_gan_jax.evaluation import evaluator as evaluator_lib

ALIGN_IMAGES = 512        # held-out captions for the verifier (±0.03 at 95% for p near 0.5 needs ~1000; ±0.04 here)
FID_IMAGES = 256          # standard FID on few images is biased upwards: compare trained vs untrained at equal N
EVAL_RESERVE_SECONDS = 240
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


def _log(message: str) -> None:
  print(f"[demo {time.strftime('%H:%M:%S')}] {message}", flush=True)


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
  start_time = FLAGS.start_time or time.time()
  deadline = start_time + FLAGS.minutes * 60
  workdir = os.path.abspath(FLAGS.workdir)
  os.makedirs(workdir, exist_ok=True)
  align_images, fid_images = FLAGS.align_images, FLAGS.fid_images

  config = demo_config(FLAGS.config, config_flags.get_override_values(FLAGS["config"]), FLAGS.data_dir)
  _log(f"{jax.device_count()} {jax.devices()[0].platform} device(s), {os.cpu_count()} cores; workdir {workdir}")
  trainer = train.Trainer(config)
  # One clock for stopping and for the progress lines; the dataset's first generation counts against it.
  train_deadline = deadline - EVAL_RESERVE_SECONDS
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
  metrics = {"steps": steps, "train_seconds": round(seconds, 1),
             "steps_per_sec": round((steps - start_step) / max(seconds, 1e-9), 3)}
  align, (grid_images, grid_captions) = alignment_lib.shapes_alignment(trainer, state, config, align_images)
  metrics.update(align)
  evaluator = evaluator_lib.Evaluator(config, trainer, num_images=fid_images, include_raw=False)
  metrics.update(fid_scores(evaluator, state))
  untrained_path = os.path.join(workdir, f"untrained_metrics_{fid_images}.json")
  if not os.path.exists(untrained_path):
    untrained = fid_scores(evaluator, trainer.init_state())
    with open(untrained_path, "w") as f:
      json.dump(untrained, f, indent=2)
  with open(untrained_path) as f:
    metrics.update({f"untrained_{k}": v for k, v in json.load(f).items()})
  metrics.update({"align_images": align_images, "fid_images": fid_images})

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
      print(f"  {key:32s} {metrics[key]:.3f}")
  print(f"  metrics:      {os.path.join(workdir, 'metrics.json')}\n"
        f"  sample grid:  {os.path.join(workdir, 'samples.png')} (EMA generator, held-out captions)\n"
        f"  TensorBoard:  tensorboard --logdir {workdir}")
  return 0


if __name__ == "__main__":
  app.run(main)
