"""One trainer per workdir: WORKDIR/TRAINER_LOCK (JSON: host, pid, heartbeat time), local or gs://.

A second trainer on the same workdir (a relaunch that left the old processes alive) would interleave checkpoints
and events; `WorkdirLock.acquire` refuses it with an error that names the holder. A lock never stays stuck: the
holder refreshes its heartbeat (`refresh`, called every step, writes once a minute), and a lock whose heartbeat is older
than `stale_seconds`, or whose holder process is gone (same host), is taken over with a warning. Only process 0 of
a multi-host run takes the lock.
"""
import json
import os
import socket
import time

from absl import logging

LOCK_FILE = "TRAINER_LOCK"
DEFAULT_STALE_SECONDS = 900.0  # a heartbeat older than this means the holder died
REFRESH_SECONDS = 60.0  # `refresh` rewrites the heartbeat at most this often (it is called every step)


class WorkdirLockedError(RuntimeError):
  """Another live trainer holds the workdir."""


def _pid_alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # exists, owned by someone else
    return True
  return True


class WorkdirLock:
  """Acquire/refresh/release the trainer lock of one workdir (see the module doc)."""

  def __init__(self, workdir: str, stale_seconds: float = DEFAULT_STALE_SECONDS):
    from etils import epath  # pylint: disable=g-import-not-at-top
    self.path = epath.Path(workdir) / LOCK_FILE
    self.stale_seconds = float(stale_seconds)
    self.owner = {"host": socket.gethostname(), "pid": os.getpid()}
    self._held = False
    self._written = 0.0

  def _read(self) -> dict | None:
    try:
      return json.loads(self.path.read_text())
    except FileNotFoundError:
      return None
    except (ValueError, OSError) as e:  # a torn write: treat as stale
      logging.warning("Unreadable %s (%s); taking it over.", self.path, e)
      return None

  def _write(self) -> None:
    self.path.parent.mkdir(parents=True, exist_ok=True)
    self._written = time.time()
    self.path.write_text(json.dumps(dict(self.owner, heartbeat=self._written)))

  def acquire(self) -> None:
    """Takes the lock, or raises WorkdirLockedError when a live trainer holds it."""
    holder = self._read()
    if holder is not None and {k: holder.get(k) for k in self.owner} != self.owner:
      age = time.time() - float(holder.get("heartbeat", 0.0))
      same_host = holder.get("host") == self.owner["host"]
      dead = same_host and not _pid_alive(int(holder.get("pid", -1)))
      if age < self.stale_seconds and not dead:
        raise WorkdirLockedError(
            f"{self.path.parent} is in use by another trainer (host {holder.get('host')}, pid {holder.get('pid')}, "
            f"last heartbeat {age:.0f} s ago). Stop that process first (launch/train.sh does), or, if it is dead "
            f"on another host, remove {self.path} (or wait {self.stale_seconds - age:.0f} s until it counts as "
            "stale).")
      logging.warning("Taking over %s from host %s pid %s (%s).", self.path, holder.get("host"), holder.get("pid"),
                      "process gone" if dead else f"heartbeat {age:.0f} s old")
    self._write()
    self._held = True

  def refresh(self, force: bool = False) -> None:
    """Renews the heartbeat if held and REFRESH_SECONDS have passed since the last write (or `force`)."""
    if self._held and (force or time.time() - self._written >= REFRESH_SECONDS):
      self._write()

  def release(self) -> None:
    """Removes the lock if this process still holds it."""
    if not self._held:
      return
    holder = self._read()
    if holder is not None and {k: holder.get(k) for k in self.owner} == self.owner:
      self.path.unlink()
    self._held = False

  def __enter__(self):
    self.acquire()
    return self

  def __exit__(self, *exc):
    self.release()
    return False
