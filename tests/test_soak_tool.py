"""tools/soak.py's measurements: RSS of a process tree from /proc, and the second-half slope."""
import importlib.util
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("soak", ROOT / "tools" / "soak.py")
soak = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(soak)


def test_rss_counts_children():
  alone = soak.rss_mib(os.getpid())
  assert alone > 10  # this interpreter with numpy and pytest loaded
  child = subprocess.Popen([sys.executable, "-c", "import time; x = bytearray(200 * 2**20); time.sleep(30)"])
  try:
    for _ in range(100):
      with_child = soak.rss_mib(os.getpid())
      if with_child > alone + 150:
        break
      subprocess.run(["sleep", "0.1"], check=True, timeout=10)
    assert with_child > alone + 150
  finally:
    child.kill()
    child.wait(timeout=30)


def test_slope_of_the_second_half():
  flat_then_rising = [(t * 30.0, 1000.0) for t in range(10)] + [(t * 30.0, 1000.0 + t) for t in range(10, 20)]
  assert soak.slope_per_10_minutes(flat_then_rising) == pytest.approx(20.0)  # 1 MiB per 30 s
  assert soak.slope_per_10_minutes([(0.0, 5.0)]) != soak.slope_per_10_minutes([(0.0, 5.0)])  # nan
