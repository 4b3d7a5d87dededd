"""Orbax checkpoints of the whole train state (async, keep N), restored straight into sharded targets.

Layout: WORKDIR/checkpoints/<step>/{state,meta}. `meta` is JSON (the step and the config), so evaluation and
sampling can rebuild the model from a workdir alone. WORKDIR/TRAIN_DONE tells `--mode=eval` followers that no more
checkpoints will come. (When to stop and save early is stop_decision's.)
"""
import contextlib
import logging as std_logging
import os
import uuid
from typing import Any

import jax
import orbax.checkpoint as ocp

CHECKPOINT_DIR = "checkpoints"
DAMAGED_DIR = "checkpoints_damaged"  # where a trainer moves a checkpoint that failed to restore (kept, not deleted)
TRAIN_DONE_FILE = "TRAIN_DONE"


def mark_training_done(workdir: str) -> None:
  """Writes WORKDIR/TRAIN_DONE, which tells `--mode=eval` followers that no more checkpoints will come."""
  from etils import epath  # pylint: disable=g-import-not-at-top
  (epath.Path(workdir) / TRAIN_DONE_FILE).write_text("done\n")


def clear_training_done(workdir: str) -> None:
  """Removes a TRAIN_DONE left by an earlier, shorter run that this run extends."""
  from etils import epath  # pylint: disable=g-import-not-at-top
  marker = epath.Path(workdir) / TRAIN_DONE_FILE
  if marker.exists():
    marker.unlink()


def training_done(workdir: str) -> bool:
  """Whether WORKDIR/TRAIN_DONE exists."""
  from etils import epath  # pylint: disable=g-import-not-at-top
  return (epath.Path(workdir) / TRAIN_DONE_FILE).exists()


class _ReadOnlyNoticeFilter(std_logging.Filter):
  """Drops orbax's "Given directory is read only" warning, which it logs for every read-only manager: ours are
  read-only on purpose (evaluation, sampling, the demo's step lookup). Every other record passes."""

  def filter(self, record: std_logging.LogRecord) -> bool:
    return not str(record.msg).startswith("Given directory is read only")


@contextlib.contextmanager
def _quiet_read_only_notice():
  target = std_logging.getLogger("absl")  # absl.logging.warning goes through this logger
  notice_filter = _ReadOnlyNoticeFilter()
  target.addFilter(notice_filter)
  try:
    yield
  finally:
    target.removeFilter(notice_filter)


def check_writable(directory: str) -> None:
  """Creates `directory` and writes and removes a probe file in it; raises PermissionError naming the folder when
  that fails, before anything is trained (orbax's own error surfaces only at the first save, followed by minutes of
  waiting on its background threads). Remote paths (gs://...) are not probed."""
  if "://" in directory:
    return
  probe = os.path.join(directory, f".write_probe_{os.getpid()}_{uuid.uuid4().hex[:8]}")
  try:
    os.makedirs(directory, exist_ok=True)
    with open(probe, "w") as f:
      f.write("probe\n")
    os.remove(probe)
  except OSError as e:
    raise PermissionError(
        f"The checkpoints folder {directory} is not writable ({type(e).__name__}: {e}). Fix its permissions "
        f"(or remove a file of that name), or train with another --workdir.") from e


class Checkpointer:
  """Thin wrapper over `ocp.CheckpointManager` for one TrainState tree plus JSON metadata.

  A writing Checkpointer checks first that WORKDIR/checkpoints can be written (`check_writable`).
  """

  def __init__(self, workdir: str, keep: int = 3, async_save: bool = True, read_only: bool = False):
    self.directory = os.path.join(os.path.abspath(workdir) if "://" not in workdir else workdir, CHECKPOINT_DIR)
    if not read_only:
      check_writable(self.directory)
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=not read_only, read_only=read_only,
                                           enable_async_checkpointing=async_save)
    with _quiet_read_only_notice() if read_only else contextlib.nullcontext():
      self._manager = ocp.CheckpointManager(self.directory, options=options, item_names=("state", "meta"))

  def latest_step(self) -> int | None:
    self._manager.reload()
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    self._manager.reload()
    return list(self._manager.all_steps())

  def save(self, step: int, state: Any, meta: dict) -> None:
    self._manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                     meta=ocp.args.JsonSave(meta)), force=True)

  def restore(self, step: int, abstract_state: Any, shardings: Any) -> Any:
    """Restores the state of `step` into arrays with `shardings` (a tree matching `abstract_state`); its JSON
    metadata comes from `restore_meta`."""
    target = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                          abstract_state, shardings)
    restored = self._manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target)))
    return restored["state"]

  def restore_meta(self, step: int) -> dict:
    return self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]

  def set_aside(self, step: int) -> str:
    """Moves checkpoint `step` out of the way to WORKDIR/checkpoints_damaged/<step> (a suffix if that exists), so
    that training can save that step again; nothing is deleted. Returns the new path."""
    from etils import epath  # pylint: disable=g-import-not-at-top
    source = epath.Path(self.directory) / str(step)
    damaged = epath.Path(self.directory).parent / DAMAGED_DIR
    damaged.mkdir(parents=True, exist_ok=True)
    target, n = damaged / str(step), 1
    while target.exists():
      target, n = damaged / f"{step}_{n}", n + 1
    source.rename(target)
    self._manager.reload()
    return str(target)

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()
