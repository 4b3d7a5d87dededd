"""WorkdirLock: a second live trainer is refused; a dead or silent holder is taken over; release removes it."""
import json
import os
import socket
import subprocess
import sys
import time

import pytest

from xmc_gan_jax import workdir_lock


def _holder(tmp_path, **fields):
  lock = tmp_path / workdir_lock.LOCK_FILE
  lock.write_text(json.dumps({"host": socket.gethostname(), "pid": os.getppid(), "heartbeat": time.time(),
                              **fields}))
  return lock


def test_live_holder_is_refused_with_its_name(tmp_path):
  _holder(tmp_path)  # the test runner's parent: alive, same host, fresh heartbeat
  with pytest.raises(workdir_lock.WorkdirLockedError, match=rf"pid {os.getppid()}.*Stop that process first"):
    workdir_lock.WorkdirLock(str(tmp_path)).acquire()


def test_dead_process_and_stale_heartbeat_are_taken_over(tmp_path):
  dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                        timeout=60, check=True)
  _holder(tmp_path, pid=int(dead.stdout))
  lock = workdir_lock.WorkdirLock(str(tmp_path))
  lock.acquire()
  assert json.loads((tmp_path / workdir_lock.LOCK_FILE).read_text())["pid"] == os.getpid()
  lock.release()
  # Another host whose heartbeat stopped long ago.
  _holder(tmp_path, host="elsewhere", heartbeat=time.time() - 2000)
  with workdir_lock.WorkdirLock(str(tmp_path), stale_seconds=900):
    pass
  # ... but not one that is still beating.
  _holder(tmp_path, host="elsewhere")
  with pytest.raises(workdir_lock.WorkdirLockedError, match="host elsewhere"):
    workdir_lock.WorkdirLock(str(tmp_path)).acquire()


def test_release_and_refresh(tmp_path):
  lock = workdir_lock.WorkdirLock(str(tmp_path / "new"))
  with lock:
    first = json.loads(lock.path.read_text())["heartbeat"]
    time.sleep(0.01)
    lock.refresh()  # within REFRESH_SECONDS of the last write: nothing written
    assert json.loads(lock.path.read_text())["heartbeat"] == first
    lock.refresh(force=True)
    assert json.loads(lock.path.read_text())["heartbeat"] > first
    lock.acquire()  # re-acquiring our own lock is fine (a resumed loop in the same process)
  assert not lock.path.exists()
  # A lock taken over by someone else is not removed by the old holder's release.
  lock.acquire()
  _holder(tmp_path / "new", host="elsewhere")
  lock.release()
  assert lock.path.exists()


def test_a_second_trainer_is_refused_before_anything_is_built(tmp_path):
  from tests.core import tiny_setup  # pylint: disable=import-outside-toplevel
  from xmc_gan_jax import train  # pylint: disable=import-outside-toplevel
  _holder(tmp_path)
  trainer = train.Trainer(tiny_setup.tiny_config(), text_encoder=tiny_setup.tiny_text_encoder())
  with pytest.raises(workdir_lock.WorkdirLockedError, match="in use by another trainer"):
    trainer.run(str(tmp_path))
  assert not (tmp_path / "checkpoints").exists()
