"""The stop decision: preemption anywhere stops all, the time budget is process 0's, SIGTERM sets the flag."""
import os
import signal
import time

import numpy as np

from xmc_gan_jax import stop_decision as sd


def test_combine_preemption_anywhere_and_time_on_process_zero():
  assert sd.combine([[0, 0], [0, 0]]) == sd.NONE
  assert sd.combine([[0, 0], [1, 0]]) == sd.PREEMPTED          # SIGTERM to process 1 only
  assert sd.combine([[0, 1], [0, 0]]) == sd.OUT_OF_TIME        # process 0's clock decides
  assert sd.combine([[0, 0], [0, 1]]) == sd.NONE               # another host's fast clock does not
  assert sd.combine([[0, 1], [1, 1]]) == sd.PREEMPTED
  assert sd.combine(np.array([0, 0], np.int32)) == sd.NONE       # one process


def test_sigterm_is_caught_and_the_handler_restored():
  previous = signal.getsignal(signal.SIGTERM)
  with sd.StopDecision() as decision:
    assert decision.poll(1) == sd.NONE
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(0.05)
    assert decision.preempted and decision.poll(2) == sd.PREEMPTED
  assert signal.getsignal(signal.SIGTERM) == previous


def test_time_budget():
  with sd.StopDecision(stop_time=time.time() - 1) as decision:
    assert decision.poll(1) == sd.OUT_OF_TIME
  with sd.StopDecision(stop_time=time.time() + 3600) as decision:
    assert decision.poll(1) == sd.NONE


def test_several_processes_read_the_gathered_flags_one_poll_later(monkeypatch):
  """As on a pod (the collective path, here over this process's 8 devices): the answer of poll n is the flags of
  poll n - 1, so the host never waits for the step it just dispatched."""
  monkeypatch.setattr(sd.jax, "process_count", lambda: 2)
  with sd.StopDecision() as decision:
    assert decision.poll(1) == sd.NONE
    decision.preempted = True
    assert decision.poll(2) == sd.NONE            # raised before poll 2: read at poll 3
    assert decision.poll(3) == sd.PREEMPTED
  with sd.StopDecision(stop_time=time.time() - 1) as decision:
    assert decision.poll(1) == sd.NONE
    assert decision.poll(2) == sd.OUT_OF_TIME


def test_flag_gather_any_preemption_and_process_zero_clock():
  gather = sd._FlagGather()  # pylint: disable=protected-access
  assert np.asarray(gather.start(np.array([0, 0]))).tolist() == [0, 0]
  assert np.asarray(gather.start(np.array([1, 0]))).tolist() == [1, 0]
  assert np.asarray(gather.start(np.array([0, 1]))).tolist() == [0, 1]   # this is process 0: its clock counts
  result = gather.start(np.array([1, 1]))
  assert result.sharding.is_fully_replicated and result.shape == (2,)
