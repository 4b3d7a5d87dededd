"""Standalone evaluation of checkpoints: `--mode=eval` follows a training run and scores each new checkpoint;
`evaluate_checkpoint` scores one, for scripts.

`follow_checkpoints` scores every checkpoint in WORKDIR/checkpoints once, averaged over eval.repeats
(`<metric>_std` = std over repeats), appends one row per step to WORKDIR/scores.csv (header once; steps already
there are skipped, so it resumes), writes `eval/*` scalars to TensorBoard in WORKDIR/eval, and stops when
WORKDIR/TRAIN_DONE exists and every checkpoint is scored, or after a timeout. Scores follow the protocol of
evaluation/evaluator.py.
"""
import csv
import io
import os
import time

import jax
import ml_collections
from absl import logging

from xmc_gan_jax import checkpointing
from xmc_gan_jax import runtime as runtime_lib
from xmc_gan_jax.evaluation.evaluator import Evaluator

SCORES_FILE = "scores.csv"
EVENTS_DIR = "eval"
DEFAULT_POLL_SECONDS = 60.0
_CSV_LEAD = ("fid", "fid_std", "ema_fid", "ema_fid_std", "kid", "ema_kid", "kid_std", "ema_kid_std", "is",
             "ema_is", "is_std", "ema_is_std")
_CSV_TAIL = ("num_images", "repeats")


def _standalone_images(config: ml_collections.ConfigDict) -> int:
  return int(config.eval.get("standalone_num_images", 0) or config.eval.num_images)


def _checkpointer(workdir: str) -> checkpointing.Checkpointer | None:
  """A read-only Checkpointer, or None while WORKDIR/checkpoints does not exist yet."""
  from etils import epath  # pylint: disable=g-import-not-at-top
  if not (epath.Path(workdir) / checkpointing.CHECKPOINT_DIR).exists():
    return None
  return checkpointing.Checkpointer(workdir, read_only=True)


def _check_workdir(workdir: str) -> None:
  from etils import epath  # pylint: disable=g-import-not-at-top
  if not epath.Path(workdir).exists():
    raise FileNotFoundError(f"Workdir {workdir!r} does not exist; pass the --workdir of a training run.")


def evaluate_checkpoint(config: ml_collections.ConfigDict, workdir: str, step: int | None = None, *,
                        num_images: int | None = None, repeats: int | None = None, runtime=None,
                        evaluator: Evaluator | None = None) -> dict[str, float]:
  """Scores one checkpoint (default: the latest) of WORKDIR: `score_repeats` keys plus `step`.

  num_images / repeats default to eval.standalone_num_images (0 = eval.num_images) / eval.repeats. For example
  `ema_fid`, `ema_kid` and, on shapes, `ema_align_all`, `ema_align_color_position_2obj`.
  """
  _check_workdir(workdir)
  checkpointer = _checkpointer(workdir)
  steps = checkpointer.all_steps() if checkpointer else []
  if not steps:
    raise FileNotFoundError(f"No checkpoint in {os.path.join(workdir, checkpointing.CHECKPOINT_DIR)}.")
  step = steps[-1] if step is None else int(step)
  if step not in steps:
    raise FileNotFoundError(f"No checkpoint for step {step} in {workdir}; available steps: {steps}.")
  runtime = runtime or (evaluator.runtime if evaluator else runtime_lib.Runtime(config))
  evaluator = evaluator or Evaluator(config, runtime, num_images=num_images or _standalone_images(config))
  state = runtime.restore(checkpointer, step)
  checkpointer.close()
  scores = evaluator.score_repeats(state, int(repeats or config.eval.repeats))
  scores["step"] = float(step)
  return scores


def _read_text(path) -> str:
  """The file's text, "" when it does not exist (local paths and gs:// alike)."""
  from etils import epath  # pylint: disable=g-import-not-at-top
  path = epath.Path(path)
  return path.read_text() if path.exists() else ""


def read_scored_steps(path) -> set[int]:
  """Steps that already have a row in a scores.csv (empty set if the file does not exist; path may be gs://)."""
  rows = csv.DictReader(io.StringIO(_read_text(path)))
  return {int(row["step"]) for row in rows if row.get("step", "").strip()}


def scores_columns(row: dict[str, float]) -> list[str]:
  """CSV column order: step, fid, fid_std, ema_fid, ema_fid_std, kid, ema_kid, ..., others sorted, num_images,
  repeats."""
  lead = [k for k in _CSV_LEAD if k in row]
  rest = sorted(k for k in row if k not in lead and k not in _CSV_TAIL and k != "step")
  return ["step"] + lead + rest + [k for k in _CSV_TAIL if k in row]


def append_scores(path, step: int, row: dict[str, float]) -> None:
  """Appends one row; writes the header first if the file is new (an existing header decides the columns).

  The file is rewritten whole (object stores such as gs:// cannot append); it holds one short row per checkpoint.
  """
  from etils import epath  # pylint: disable=g-import-not-at-top
  text = _read_text(path)
  row = dict(row, step=step)
  header = next(csv.reader(io.StringIO(text)), None) if text.strip() else None
  out = io.StringIO()
  if header is None:
    header = scores_columns(row)
    csv.writer(out).writerow(header)
    text = ""
  extra = sorted(set(row) - set(header))
  if extra:
    logging.warning("%s has no columns for %s; those values are only in TensorBoard.", path, extra)
  fmt = lambda k: "" if k not in row else (str(int(row[k])) if k in ("step",) + _CSV_TAIL else f"{row[k]:.8g}")
  csv.writer(out).writerow([fmt(k) for k in header])
  epath.Path(path).write_text(text + out.getvalue())


def follow_checkpoints(config: ml_collections.ConfigDict, workdir: str, *, poll_seconds: float | None = None,
                       timeout_seconds: float | None = None, runtime=None,
                       evaluator: Evaluator | None = None) -> list[int]:
  """`--mode=eval`: scores each new checkpoint of WORKDIR until training is done; returns the steps scored.

  poll_seconds (default config.eval.poll_seconds or 60) is the wait between looks at WORKDIR/checkpoints;
  timeout_seconds (default config.eval.follow_timeout_seconds; 0 or None = none) bounds the whole follow.
  A checkpoint deleted (keep_checkpoints) before it could be scored is skipped with a warning.
  """
  from clu import metric_writers  # pylint: disable=g-import-not-at-top
  _check_workdir(workdir)
  poll = float(config.eval.get("poll_seconds", DEFAULT_POLL_SECONDS) if poll_seconds is None else poll_seconds)
  timeout = float((config.eval.get("follow_timeout_seconds", 0) if timeout_seconds is None
                   else timeout_seconds) or 0)
  runtime = runtime or (evaluator.runtime if evaluator else runtime_lib.Runtime(config))
  evaluator = evaluator or Evaluator(config, runtime, num_images=_standalone_images(config))
  repeats = int(config.eval.repeats)
  scores_path = os.path.join(workdir, SCORES_FILE)
  done = read_scored_steps(scores_path)
  writer = metric_writers.create_default_writer(os.path.join(workdir, EVENTS_DIR),
                                                just_logging=jax.process_index() > 0)
  start, scored = time.time(), []
  checkpointer = None
  try:
    while True:
      finished = checkpointing.training_done(workdir)  # read first: every checkpoint listed below then is the last lot
      checkpointer = checkpointer or _checkpointer(workdir)
      pending = [s for s in (checkpointer.all_steps() if checkpointer else []) if s not in done]
      for step in pending:
        try:
          state = runtime.restore(checkpointer, step)
        except (FileNotFoundError, ValueError) as e:
          logging.warning("Checkpoint %d could not be restored (deleted by keep_checkpoints?): %s", step, e)
          continue
        row = evaluator.score_repeats(state, repeats)
        del state
        if jax.process_index() == 0:
          append_scores(scores_path, step, row)
        writer.write_scalars(step, {f"eval/{k}": v for k, v in row.items()})
        writer.flush()
        done.add(step)
        scored.append(step)
        logging.info("Scored checkpoint %d: %s", step, {k: round(v, 4) for k, v in row.items()})
      if finished:
        logging.info("Training is done and every checkpoint is scored; stopping.")
        break
      if timeout and time.time() - start + poll > timeout:
        logging.warning("Stopping after the %.0f s timeout; training has not finished.", timeout)
        break
      time.sleep(poll)
  finally:
    writer.close()
    if checkpointer is not None:
      checkpointer.close()
  return scored
