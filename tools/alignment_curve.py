"""Alignment curve of a captioned-shapes run: the shapes verifier's scores of every kept checkpoint's EMA generator.

    python tools/alignment_curve.py --workdir=runs/demo120 [--images=512] [--untrained]

Tells a slow run from a stuck one without FID's Inception passes (about 10 s per checkpoint at 32 px on 2 CPU
cores). Each checkpoint is scored like `make demo` scores its last one (`evaluation.alignment.shapes_alignment`: the first --images
validation captions, the same fixed noise for every checkpoint); --untrained adds step 0 (the run's initial
state). Writes WORKDIR/alignment_curve.md (a table) and WORKDIR/alignment_curve.json (one row per step) and prints
the table (WORKDIR may be gs://...). Re-running scores only checkpoints not yet in the JSON (at the same --images), so it can follow a
running job. Keep more checkpoints while training (`--config.keep_checkpoints=40` for `python -m xmc_gan_jax.demo`) to
get more points; the default keeps the last 3.
"""
import argparse
import json
import os
import pathlib
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
  sys.path.insert(0, str(ROOT))

COLUMNS = ("ema_align_color_position", "ema_align_all", "ema_align_color_position_1obj", "ema_align_all_1obj",
           "ema_align_color_position_2obj", "ema_align_all_2obj")


def score_checkpoints(runtime, config, checkpointer, num_images: int, untrained: bool = False,
                      known: dict[int, dict] | None = None) -> list[dict]:
  """One row {step, images, ema_align_*} per checkpoint of `checkpointer` (and step 0 when `untrained`),
  ascending; steps in `known` (rows of an earlier call with the same num_images) are reused, not re-scored."""
  from xmc_gan_jax.evaluation import alignment  # pylint: disable=g-import-not-at-top
  known = known or {}
  rows = []
  for step in ([0] if untrained else []) + checkpointer.all_steps():
    if step in known:
      rows.append(known[step])
      continue
    if step == 0:
      state = runtime.init_state()
    else:
      state = runtime.restore(checkpointer, step)
    rows.append(dict(alignment.shapes_alignment(runtime, state, config, num_images)[0], step=step,
                     images=num_images))
    del state
  return rows


def earlier_rows(path, num_images: int) -> dict[int, dict]:
  """Rows of an earlier alignment_curve.json scored on the same number of captions, by step ({} if none)."""
  if not path.is_file():
    return {}
  return {row["step"]: row for row in json.loads(path.read_text()) if row.get("images") == num_images}


def markdown_table(rows: list[dict]) -> str:
  """| step | colour+position | ... | with three decimals, one line per row; '-' where no caption had that many
  objects."""
  names = ("step", "colour+position", "all", "colour+position 1 obj", "all 1 obj", "colour+position 2 obj",
           "all 2 obj")
  lines = ["| " + " | ".join(names) + " |", "|---" * len(names) + "|"]
  for row in rows:
    lines.append(f"| {row['step']} | " + " | ".join(f"{row[c]:.3f}" if c in row else "-" for c in COLUMNS) + " |")
  return "\n".join(lines) + "\n"


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--workdir", required=True, help="a shapes training run (make demo's WORKDIR)")
  parser.add_argument("--images", type=int, default=512, help="held-out captions per checkpoint")
  parser.add_argument("--untrained", action="store_true", help="also score the initial state as step 0")
  args = parser.parse_args(argv)
  if args.images < 1:
    raise ValueError(f"--images must be >= 1, got {args.images}.")

  import jax  # pylint: disable=g-import-not-at-top
  from etils import epath  # pylint: disable=g-import-not-at-top
  from xmc_gan_jax import runtime, sample, sharding  # pylint: disable=g-import-not-at-top
  checkpointer, _, config = sample.open_run(args.workdir)
  if config.dataset.name != "shapes":
    raise ValueError(f"{args.workdir} trained on {config.dataset.name!r}; the verifier scores captioned shapes only.")
  run = runtime.Runtime(config, mesh=sharding.make_mesh(config.mesh, jax.devices()[:1]))
  json_path = epath.Path(args.workdir) / "alignment_curve.json"
  rows = score_checkpoints(run, config, checkpointer, args.images, args.untrained,
                           earlier_rows(json_path, args.images))
  checkpointer.close()
  table = markdown_table(rows)
  (epath.Path(args.workdir) / "alignment_curve.md").write_text(table)
  json_path.write_text(json.dumps(rows, indent=2))
  print(f"EMA generator, first {args.images} validation captions, fixed noise:\n{table}")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
