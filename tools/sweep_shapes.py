"""Trains shapes-config variants side by side from exported arrays (JAX only, no TensorFlow) and tracks alignment.

    python tools/export_shapes_arrays.py --out=.gpu/shapes32                 # once, where TensorFlow is
    python tools/sweep_shapes.py --arrays=.gpu/shapes32 --out=runs/sweep --minutes=6 \
        --variant=base --variant="no_image:loss.image_weight=0" \
        --variant="random_words:text_encoder.features=random_words;optim.d_steps_per_g_step=1"

Each --variant is NAME[:key=value;key=value...] (keys of configs/shapes.py, as `make demo --set`). Variants run as
parallel processes (--parallel, default all) until --minutes of wall time, or --max_steps. Every variant scores
its EMA generator with the shapes verifier on the demo's held-out captions (the exported evaluation set, same
noise as `make demo`) when it passes a step in --eval_steps and at the end. Writes --out/sweep.json (all curves),
--out/sweep.md (a table of the last scores) and --out/grids.npz (16 EMA samples per variant, uint8).

Training batches: each step draws batch_size images uniformly without replacement within an epoch (one
permutation per epoch, seeded) and one of each image's 5 captions: the distribution of the tf.data pipeline
(shuffle, uniform caption choice, no flip), not its exact order.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # pylint: disable=g-import-not-at-top

DEFAULT_EVAL_STEPS = (500, 1000, 2000, 4000, 8000, 12000, 16000, 24000, 32000, 48000, 64000, 96000, 128000)
GRID_IMAGES = 16
REPORT_KEYS = ("ema_align_color_position", "ema_align_color_position_1obj", "ema_align_color_position_2obj",
               "ema_align_all", "ema_align_all_1obj")


class ArrayBatches:
  """Infinite host batches {image, token_ids, token_mask} from exported train arrays."""

  def __init__(self, images: np.ndarray, token_ids: np.ndarray, batch_size: int, seed: int):
    """images uint8 [N,S,S,3]; token_ids int [N,C,T] (C captions per image, 0 = padding)."""
    if len(images) < batch_size:
      raise ValueError(f"{len(images)} training images cannot fill a batch of {batch_size}.")
    self._images, self._ids = images, token_ids
    self._batch, self._seed = batch_size, seed
    self._epoch, self._order, self._position = 0, self._permutation(0), 0

  def _permutation(self, epoch: int) -> np.ndarray:
    return np.random.default_rng([self._seed, epoch]).permutation(len(self._images))

  def __iter__(self):
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    if self._position + self._batch > len(self._order):
      self._epoch += 1
      self._order, self._position = self._permutation(self._epoch), 0
    rows = self._order[self._position:self._position + self._batch]
    self._position += self._batch
    rng = np.random.default_rng([self._seed, self._epoch, self._position])
    caption = rng.integers(0, self._ids.shape[1], size=len(rows))
    ids = self._ids[rows, caption].astype(np.int32)
    return {"image": self._images[rows], "token_ids": ids, "token_mask": (ids != 0).astype(np.int32)}


def eval_batches(arrays, batch_size: int) -> list[dict[str, np.ndarray]]:
  """The exported evaluation set as demo-style batches (objects/*, num_objects, caption)."""
  n = len(arrays["eval_token_ids"])
  out = []
  for start in range(0, n, batch_size):
    part = slice(start, min(start + batch_size, n))
    batch = {"token_ids": arrays["eval_token_ids"][part], "token_mask": arrays["eval_token_mask"][part],
             "num_objects": arrays["eval_num_objects"][part], "caption": arrays["eval_caption"][part]}
    for key in ("color", "shape", "size", "row", "col"):
      batch[f"objects/{key}"] = arrays[f"eval_objects_{key}"][part]
    out.append(batch)
  return out


def parse_variant(text: str) -> tuple[str, list[str]]:
  """"name:a.b=1;c=2" -> ("name", ["a.b=1", "c=2"])."""
  name, _, sets = text.partition(":")
  if not name or any(c in name for c in "/ "):
    raise ValueError(f"--variant {text!r}: expected NAME[:key=value;...] with a plain name.")
  return name, [s for s in sets.split(";") if s.strip()]


def run_variant(name: str, sets: list[str], arrays_dir: str, out_path: str, deadline: float, max_steps: int,
                eval_steps: tuple[int, ...], res: int) -> None:
  """Trains one variant until `deadline` (unix time) or max_steps; appends a JSON line per evaluation."""
  import jax  # pylint: disable=g-import-not-at-top
  from xmc_gan_jax import demo, train  # pylint: disable=g-import-not-at-top
  from xmc_gan_jax.models import text_encoder as text_encoder_lib  # pylint: disable=g-import-not-at-top

  arrays = np.load(os.path.join(arrays_dir, "arrays.npz"))
  config = demo.build_config(argparse.Namespace(res=res, data_dir=arrays_dir, set=sets))
  encoder = text_encoder_lib.load_text_encoder(os.path.join(arrays_dir, "text_encoder"), config.text_encoder.pooling,
                                               config.text_encoder.features)
  trainer = train.Trainer(config, text_encoder=encoder)
  state = trainer.init_state()
  data = ArrayBatches(arrays["train_image"], arrays["train_token_ids"], config.batch_size, config.seed)
  evaluation = eval_batches(arrays, config.eval.batch_size)
  pending = sorted(s for s in eval_steps if s <= max_steps)
  start, eval_seconds, step, compile_seconds = time.time(), 0.0, 0, 0.0

  def record(final: bool) -> None:
    nonlocal eval_seconds
    began = time.time()
    scores, grid = demo.alignment(trainer, state, config, len(arrays["eval_token_ids"]), batches=evaluation)
    eval_seconds += time.time() - began
    train_seconds = time.time() - start - eval_seconds - compile_seconds
    row = dict(variant=name, sets=sets, step=step, train_seconds=round(train_seconds, 1),
               steps_per_sec=round((step - 1) / max(train_seconds, 1e-9), 2), final=final,
               compile_seconds=round(compile_seconds, 1), eval_seconds=round(time.time() - began, 1),
               device=jax.devices()[0].device_kind, **{k: round(v, 4) for k, v in scores.items()})
    with open(out_path, "a") as f:
      f.write(json.dumps(row) + "\n")
    if final:
      np.savez(out_path + ".grid.npz", images=grid[0][:GRID_IMAGES], captions=np.array(grid[1][:GRID_IMAGES]))
    print(f"[{name}] step {step} cp {row['ema_align_color_position']:.3f} "
          f"cp1 {row['ema_align_color_position_1obj']:.3f} all {row['ema_align_all']:.3f} "
          f"{row['steps_per_sec']} steps/s", flush=True)

  while step < max_steps and time.time() < deadline:
    state, metrics = trainer.step(state, next(data))
    step += 1
    if step == 1:  # the first step compiles: keep it out of steps/s
      jax.block_until_ready(metrics)
      compile_seconds = time.time() - start
    if pending and step == pending[0]:
      pending.pop(0)
      jax.block_until_ready(metrics)
      record(final=False)
  jax.block_until_ready(state.step)
  record(final=True)


def summarise(rows: list[dict]) -> str:
  """Markdown table: the final row of each variant."""
  lines = ["| variant | overrides | steps | steps/s | " + " | ".join(k.replace("ema_align_", "") for k in REPORT_KEYS)
           + " |", "|" + "---|" * (4 + len(REPORT_KEYS))]
  for row in rows:
    if row["final"]:
      lines.append(f"| {row['variant']} | {'; '.join(row['sets']) or '-'} | {row['step']} | {row['steps_per_sec']} | "
                   + " | ".join(f"{row[k]:.3f}" for k in REPORT_KEYS) + " |")
  return "\n".join(lines)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--arrays", required=True, help="Folder written by tools/export_shapes_arrays.py.")
  parser.add_argument("--out", required=True)
  parser.add_argument("--variant", action="append", required=True, help="NAME[:key=value;...] (repeatable).")
  parser.add_argument("--minutes", type=float, default=5.0, help="Wall time per variant, compile included.")
  parser.add_argument("--max_steps", type=int, default=10_000_000)
  parser.add_argument("--eval_steps", default=",".join(map(str, DEFAULT_EVAL_STEPS)))
  parser.add_argument("--parallel", type=int, default=0, help="Variants at once (0 = all).")
  parser.add_argument("--res", type=int, default=32, choices=(32, 64))
  parser.add_argument("--child", help=argparse.SUPPRESS)        # internal: NAME of the variant this process runs
  parser.add_argument("--child_out", help=argparse.SUPPRESS)
  parser.add_argument("--deadline", type=float, help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  variants = dict(parse_variant(v) for v in args.variant)
  if len(variants) != len(args.variant):
    parser.error("variant names must be unique")
  eval_steps = tuple(int(s) for s in args.eval_steps.split(",") if s)
  if args.child:
    run_variant(args.child, variants[args.child], args.arrays, args.child_out, args.deadline, args.max_steps,
                eval_steps, args.res)
    return 0

  os.makedirs(args.out, exist_ok=True)
  parts = tempfile.mkdtemp(prefix="sweep_shapes_")
  names = list(variants)
  parallel = args.parallel or len(names)
  failed = []
  for first in range(0, len(names), parallel):
    deadline = time.time() + args.minutes * 60
    running = []
    for name in names[first:first + parallel]:
      command = [sys.executable, os.path.abspath(__file__), "--arrays", args.arrays, "--out", args.out,
                 "--child", name, "--child_out", os.path.join(parts, f"{name}.jsonl"), "--deadline", str(deadline),
                 "--max_steps", str(args.max_steps), "--eval_steps", args.eval_steps, "--res", str(args.res)]
      command += [f"--variant={v}" for v in args.variant]
      running.append((name, subprocess.Popen(command)))
    for name, process in running:
      if process.wait() != 0:
        failed.append(name)
  rows, grids = [], {}
  for name in names:
    path = os.path.join(parts, f"{name}.jsonl")
    if os.path.exists(path):
      with open(path) as f:
        rows += [json.loads(line) for line in f]
    if os.path.exists(path + ".grid.npz"):
      with np.load(path + ".grid.npz") as grid:
        grids[f"{name}/images"], grids[f"{name}/captions"] = grid["images"], grid["captions"]
  with open(os.path.join(args.out, "sweep.json"), "w") as f:
    json.dump(rows, f, indent=1)
  np.savez(os.path.join(args.out, "grids.npz"), **grids)
  table = summarise(rows)
  with open(os.path.join(args.out, "sweep.md"), "w") as f:
    f.write(table + "\n")
  print(table)
  if failed:
    print(f"variants that failed: {', '.join(failed)}", file=sys.stderr)
  return 1 if failed else 0


if __name__ == "__main__":
  raise SystemExit(main())
