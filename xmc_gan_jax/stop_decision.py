"""One stop decision for all hosts, taken at a step boundary.

Reasons to stop early: a SIGTERM on any process (TPU preemption or maintenance, a launcher's kill, Ctrl-C of
`timeout`), or a time budget (`config.max_train_seconds`, a deadline) that process 0's clock says has passed.
Each process raises its local flags; `StopDecision.poll(step)` combines them over all processes (an allgather of
two small integers, once per step) so that every host stops after the same step, saves the same checkpoint and
exits 0. On one process it is a local check, with no collective.
"""
import signal
import time

import jax
import numpy as np
from absl import logging

NONE, PREEMPTED, OUT_OF_TIME = 0, 1, 2
REASONS = {PREEMPTED: "SIGTERM (preemption) received", OUT_OF_TIME: "time budget reached"}


def combine(flags: np.ndarray) -> int:
  """flags int [processes, 2] = (preempted, out_of_time) per process -> the agreed reason (NONE if none).

  Preemption on any process stops everyone; the time budget counts only as process 0 (row 0) reads its clock,
  so hosts whose clocks disagree still stop together."""
  flags = np.asarray(flags).reshape(-1, 2)
  if flags[:, 0].any():
    return PREEMPTED
  return OUT_OF_TIME if flags[0, 1] else NONE


class StopDecision:
  """Context manager: installs a SIGTERM handler (restored on exit) and answers `poll(step)`.

  `stop_time` (unix seconds, inf = none) is the time budget; only process 0's clock decides it.
  """

  def __init__(self, stop_time: float = float("inf")):
    self.stop_time = stop_time
    self.preempted = False
    self._previous = None

  def __enter__(self):
    try:
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    except ValueError:  # not the main thread (some test runners): preemption is not handled
      self._previous = None
    return self

  def _handle(self, signum, frame):
    del signum, frame
    if not self.preempted:
      logging.warning("SIGTERM received: stopping at the next step boundary, after a checkpoint.")
    self.preempted = True

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
    return False

  def local_flags(self) -> np.ndarray:
    """int32 [2]: (SIGTERM seen here, this clock past stop_time)."""
    return np.array([self.preempted, time.time() > self.stop_time], np.int32)

  def poll(self, step: int) -> int:
    """The reason all processes agree to stop after `step` (NONE to go on). A collective on several processes:
    every process must call it at every step."""
    del step
    flags = self.local_flags()
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
      flags = np.asarray(multihost_utils.process_allgather(flags))
    return combine(flags)
