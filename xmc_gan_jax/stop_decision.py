"""One stop decision for all hosts, taken at a step boundary.

Reasons to stop early: a SIGTERM on any process (TPU preemption or maintenance, a launcher's kill, Ctrl-C of
`timeout`), or a time budget (`config.max_train_seconds`, a deadline) that process 0's clock says has passed.
Each process raises its local flags; `StopDecision.poll(step)` combines them over all processes so that every host
stops after the same step, saves the same checkpoint and exits 0. On one process it is a local check, with no
collective. On several, the combination is a tiny device all-reduce that `poll` dispatches after each step and
reads one step later, when it has long finished: the host never waits for the step it just dispatched, and every
process reads the same answer at the same step (a flag raised before step n's poll stops everyone after n + 1).
"""
import signal
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
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
    self._gather = None     # _FlagGather, built at the first poll on several processes
    self._pending = None    # the gather dispatched at the previous poll, unread

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
    every process must call it at every step; there the answer is that of the previous call's flags."""
    del step
    flags = self.local_flags()
    if jax.process_count() == 1:
      return combine(flags)
    if self._gather is None:
      self._gather = _FlagGather()
    previous, self._pending = self._pending, self._gather.start(flags)
    return NONE if previous is None else combine(np.asarray(previous)[None])


class _FlagGather:
  """(preempted, out_of_time) of every process -> int32 [2] = (any preempted, process 0 out of time), replicated
  on every device; `start` dispatches it and returns the unread jax.Array (no wait)."""

  def __init__(self):
    # Each process's rows contiguous: its local data is one block of the global array.
    mesh = Mesh(np.array(sorted(jax.devices(), key=lambda d: (d.process_index, d.id))), ("devices",))
    self._sharding = NamedSharding(mesh, P("devices"))
    self._shape = (jax.device_count(), 3)

    def reduce(rows):  # rows int32 [devices, 3] = (preempted, out_of_time, process index) per device
      from_zero = rows[:, 2] == 0
      return jnp.stack([rows[:, 0].max(), jnp.where(from_zero, rows[:, 1], 0).max()])

    self._reduce = jax.jit(reduce, out_shardings=NamedSharding(mesh, P()))

  def start(self, flags: np.ndarray) -> jax.Array:
    row = np.array([flags[0], flags[1], jax.process_index()], np.int32)
    local = np.tile(row, (jax.local_device_count(), 1))
    return self._reduce(jax.make_array_from_process_local_data(self._sharding, local, self._shape))
