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
