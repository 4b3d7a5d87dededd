"""Orbax checkpoints of the whole train state (async, keep N), restored straight into sharded targets.

Layout: WORKDIR/checkpoints/<step>/{state,meta}. `meta` is JSON (the step and the config), so evaluation and
sampling can rebuild the model from a workdir alone. A SIGTERM (TPU preemption, Ctrl-C from a launcher) asks the
trainer to save and exit cleanly; a run whose loss turns non-finite never saves the bad state.
"""
import os
import signal
from typing import Any

import jax
import orbax.checkpoint as ocp

CHECKPOINT_DIR = "checkpoints"
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


class Checkpointer:
  """Thin wrapper over `ocp.CheckpointManager` for one TrainState tree plus JSON metadata."""

  def __init__(self, workdir: str, keep: int = 3, async_save: bool = True, read_only: bool = False):
    self.directory = os.path.join(os.path.abspath(workdir) if "://" not in workdir else workdir, CHECKPOINT_DIR)
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=not read_only, read_only=read_only,
                                           enable_async_checkpointing=async_save)
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

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()


class PreemptionWatcher:
  """Turns SIGTERM into a flag the training loop polls (`requested`), so the loop saves and exits cleanly."""

  def __init__(self):
    self.requested = False
    self._previous = None

  def __enter__(self):
    try:
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    except ValueError:  # not in the main thread (e.g. some test runners): no preemption handling
      self._previous = None
    return self

  def _handle(self, signum, frame):
    del signum, frame
    self.requested = True

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
    return False
