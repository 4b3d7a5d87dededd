"""The default job: train XMC-GAN on captioned shapes within a time budget, then measure caption alignment.

    python -m xmc_gan_jax.demo --workdir=runs/demo --minutes=20      (what `make demo` runs)

Steps: generate the captioned-shapes dataset (first run only), train `configs/shapes.py` until the budget minus an
evaluation reserve is spent (progress lines with steps/s, time left and losses), then score the EMA generator on
held-out validation captions with the shapes verifier and compute the standard FID against validation images,
for the trained and (once, cached) the untrained generator. Writes WORKDIR/metrics.json and WORKDIR/samples.png
(a captioned grid). Re-running continues training from the last checkpoint for another budget and re-evaluates.
"""
import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import jax  # pylint: disable=g-import-not-at-top
import numpy as np

from configs import shapes as shapes_config
from xmc_gan_jax import image_grid
from xmc_gan_jax import train
from xmc_gan_jax.data import shapes_verifier
from xmc_gan_jax.data import sources
from xmc_gan_jax.evaluation import evaluator as evaluator_lib

ALIGN_IMAGES = 512        # held-out captions for the verifier (±0.03 at 95% for p near 0.5 needs ~1000; ±0.04 here)
FID_IMAGES = 256          # standard FID on few images is biased upwards: compare trained vs untrained at equal N
EVAL_RESERVE_SECONDS = 240
GRID_IMAGES = 16


def _log(message: str) -> None:
  print(f"[demo {time.strftime('%H:%M:%S')}] {message}", flush=True)


def _apply_override(config, assignment: str) -> None:
  """`a.b=value` with the value cast to the existing field's type (bools accept true/false/1/0; tuples take
  comma-separated integers, e.g. model.g_channel_multipliers=8,4,2; an empty value gives ())."""
  key, sep, raw = assignment.partition("=")
  *parents, leaf = key.strip().split(".")
  node = config
  for name in parents:
    node = node[name]
  if not sep or leaf not in node:
    raise ValueError(f"--set {assignment!r}: expected key=value with an existing config key.")
  current = node[leaf]
  if isinstance(current, bool):
    value = raw.strip().lower() in ("1", "true", "yes")
  elif isinstance(current, tuple):
    try:
      value = tuple(int(item) for item in raw.split(",") if item.strip())
    except ValueError as e:
      raise ValueError(f"--set {assignment!r}: expected comma-separated integers.") from e
  else:
    value = type(current)(raw.strip())
  node[leaf] = value


def build_config(args: argparse.Namespace):
  config = shapes_config.get_config(f"res={args.res}")
  config.dataset.data_dir = os.path.abspath(args.data_dir)
  config.total_steps = 10_000_000   # the time budget ends training (unless --set total_steps=N)
  config.eval.every_steps = 0       # evaluation runs once, after training
  config.log_every_steps = 25
  for assignment in args.set or []:
    _apply_override(config, assignment)
  return config


def alignment(trainer, state, config, num_images: int, batches=None) -> tuple[dict[str, float], tuple]:
  """Verifier accuracies of the EMA generator on the first `num_images` validation captions (fixed noise).

  `batches`: the evaluation batches (token_ids, token_mask, caption, num_objects, objects/*) when they come from
  elsewhere than the validation split's tf.data pipeline (tools/sweep_shapes.py); None = that pipeline.
  """
  judged, counts, grid, binding = {}, [], None, {}
  if batches is None:
    batches = sources.eval_source(config, trainer.text.vocab_path, trainer.text.vocab_size,
                                  num_examples=num_images, batch_size=config.eval.batch_size)
  for index, batch in enumerate(batches):
    n = batch["token_ids"].shape[0]
    z = evaluator_lib.eval_noise(config.seed, 0, index, n, config.model.z_dim)
    images = evaluator_lib.quantize(trainer.samples(state.ema_params, state.g_batch_stats, batch["token_ids"],
                                                    batch["token_mask"], z))
    rows = np.flatnonzero(batch.get("valid", np.ones(n)) > 0)
    objects = {k: v[rows] for k, v in batch.items() if k.startswith("objects/") or k == "num_objects"}
    for key, ok in shapes_verifier.score_images(images[rows], objects).items():
      judged.setdefault(key, []).append(ok)
    counts.append(objects["num_objects"])
    exchanged, eligible = shapes_verifier.colors_exchanged(objects)
    if eligible.any():
      binding.setdefault("as_captioned", []).append(judged["color_position"][-1][eligible])
      binding.setdefault("exchanged", []).append(
          shapes_verifier.score_images(images[rows][eligible], {k: v[eligible] for k, v in exchanged.items()})
          ["color_position"])
    if grid is None:
      shown = rows[:GRID_IMAGES]
      grid = (images[shown], [c.decode() for c in batch["caption"][shown]])
  summary = shapes_verifier.summarize({k: np.concatenate(v) for k, v in judged.items()}, np.concatenate(counts))
  metrics = {f"ema_{k}": float(v) for k, v in summary.items()}
  # Two-object captions with two colours: colour+position right as captioned vs with the colours exchanged.
  for key, name in (("as_captioned", "ema_binding_2obj"), ("exchanged", "ema_binding_exchanged_2obj")):
    if key in binding:
      metrics[name] = float(np.mean(np.concatenate(binding[key])))
  return metrics, grid


def fid_scores(evaluator, state) -> dict[str, float]:
  scores = evaluator.score(state)
  return {"ema_fid": scores["ema_fid"], "ema_kid": scores["ema_kid"]}


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--workdir", default="runs/demo")
  parser.add_argument("--data-dir", default="runs/tfds", help="TFDS data_dir for the generated dataset.")
  parser.add_argument("--minutes", type=float, default=20.0, help="Budget for this invocation, all included.")
  parser.add_argument("--start-time", type=float, default=None,
                      help="Unix time the budget started (e.g. before `make install`); default: now.")
  parser.add_argument("--res", type=int, default=32, choices=(32, 64))
  parser.add_argument("--set", action="append", metavar="KEY=VALUE",
                      help="Config override, e.g. --set loss.word_weight=0 (repeatable; used by the ablation).")
  parser.add_argument("--align-images", type=int, default=ALIGN_IMAGES, help="Held-out captions for the verifier.")
  parser.add_argument("--fid-images", type=int, default=FID_IMAGES, help="Images for the FID (EMA generator).")
  args = parser.parse_args(argv)
  deadline = (args.start_time or time.time()) + args.minutes * 60
  workdir = os.path.abspath(args.workdir)
  os.makedirs(workdir, exist_ok=True)

  config = build_config(args)
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
    if rate > 0:  # a step budget (--set total_steps=N) may end training before the time budget
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
  align, (grid_images, grid_captions) = alignment(trainer, state, config, args.align_images)
  metrics.update(align)
  evaluator = evaluator_lib.Evaluator(config, trainer, num_images=args.fid_images, include_raw=False)
  metrics.update(fid_scores(evaluator, state))
  untrained_path = os.path.join(workdir, f"untrained_metrics_{args.fid_images}.json")
  if not os.path.exists(untrained_path):
    untrained = fid_scores(evaluator, trainer.init_state())
    with open(untrained_path, "w") as f:
      json.dump(untrained, f, indent=2)
  with open(untrained_path) as f:
    metrics.update({f"untrained_{k}": v for k, v in json.load(f).items()})
  metrics.update({"align_images": args.align_images, "fid_images": args.fid_images})

  with open(os.path.join(workdir, "metrics.json"), "w") as f:
    json.dump(metrics, f, indent=2, sort_keys=True)
  from PIL import Image  # pylint: disable=g-import-not-at-top
  Image.fromarray(image_grid.captioned_grid(grid_images, grid_captions, columns=4)).save(
      os.path.join(workdir, "samples.png"))
  _log("done in %.1f min. Results:" % ((time.time() - (args.start_time or start)) / 60))
  for key in ("ema_align_color_position", "ema_align_all", "ema_align_color_position_1obj", "ema_align_all_1obj",
              "ema_align_color_position_2obj", "ema_align_all_2obj", "ema_binding_2obj", "ema_binding_exchanged_2obj",
              "ema_fid", "untrained_ema_fid"):
    if key in metrics:
      print(f"  {key:32s} {metrics[key]:.3f}")
  print(f"  metrics:      {os.path.join(workdir, 'metrics.json')}\n"
        f"  sample grid:  {os.path.join(workdir, 'samples.png')} (EMA generator, held-out captions)\n"
        f"  TensorBoard:  tensorboard --logdir {workdir}")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
