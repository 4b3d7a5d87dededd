"""Ahead-of-time compilation for a Cloud TPU slice on this CPU machine (`--mode=describe --topology=`), and the
arithmetic of its report (roofline bound, HBM verdict, XLA estimate validity, max-batch bisection)."""
import math
import os
import subprocess
import sys

import pytest

from xmc_gan_jax import describe
from xmc_gan_jax import topology

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ---- pure arithmetic (no libtpu, no compile) ------------------------------------------------------------------

def test_roofline_flop_bound_and_memory_bound():
  v5e = topology.CHIPS["v5e"]
  bound, compute, memory, kind = topology.roofline(197e12, 819e9 / 2, v5e)   # 1 s of FLOPs, 0.5 s of bytes
  assert (compute, memory, bound, kind) == (pytest.approx(1.0), pytest.approx(0.5), pytest.approx(1.0),
                                            "FLOP-bound")
  bound, compute, memory, kind = topology.roofline(1e12, 2 * 1228e9, topology.CHIPS["v4"])
  assert kind == "memory-bound" and bound == pytest.approx(2.0) and compute == pytest.approx(1 / 275)


def test_verdict_and_peak_bytes():
  gib = 2 ** 30
  used = topology.peak_bytes(argument=10 * gib, output=10 * gib, alias=9 * gib, temp=4 * gib, code=gib)
  assert used == 16 * gib
  assert topology.verdict(used, 16) == (True, 0.0)
  fits, headroom = topology.verdict(used, 32)
  assert fits and headroom == pytest.approx(16)
  fits, headroom = topology.verdict(17 * gib, 16)
  assert not fits and headroom == pytest.approx(-1)


@pytest.mark.parametrize("raw, expected", [(0.0123, 0.0123), (-11.99, None), (0.0, None), (float("nan"), None),
                                           (float("inf"), None), (None, None), ("x", None), (3, 3.0)])
def test_optimal_seconds_validity(raw, expected):
  assert topology.valid_estimate(raw) == expected
  text = describe.estimate_text(raw)
  assert text.startswith("no estimate") == (expected is None)


def test_parse_topology_names():
  assert topology.parse("v5e:2x2").name == "v5e:2x2"
  v4_8 = topology.parse("v4-8")        # Cloud names count TensorCores on v4: 8 cores = 4 chips
  assert (v4_8.name, v4_8.num_chips, v4_8.chips_per_host_bounds, v4_8.num_hosts) == ("v4:2x2x1", 4, (2, 2, 1), 1)
  assert topology.parse("v4-32").name == "v4:2x2x4" and topology.parse("v4-32").num_hosts == 4
  assert topology.parse("v5litepod-16").name == "v5e:4x4"
  assert topology.parse("v5e:1x1").chips_per_host_bounds == (1, 1, 1)
  for bad in ("v9:2x2", "v4:2x2", "v5e:2x2x1", "tpu", "v4-12"):
    with pytest.raises(ValueError):
      topology.parse(bad)


def test_batch_unit():
  assert topology.batch_unit(16, (8, 8)) == 1
  assert topology.batch_unit(4, (8, 8)) == 2
  assert topology.batch_unit(1, (8, 0)) == 8
  assert topology.batch_unit(4, (0, 0)) == 1
  assert topology.batch_unit(4, (8, 6)) == 6      # lcm(2, 3)


@pytest.mark.parametrize("limit, start, unit", [(37, 8, 1), (37, 64, 1), (1, 4, 1), (40, 6, 2), (7, 4, 2),
                                                (5000, 8, 1), (64, 64, 8)])
def test_largest_fitting_bisects(limit, start, unit):
  calls = []

  def fits(b):
    calls.append(b)
    assert b % unit == 0 and unit <= b <= 4096
    return b <= limit

  best = topology.largest_fitting(fits, start, unit, 4096)
  expected = min(limit, 4096) // unit * unit
  assert best == (expected or None)
  assert len(calls) <= 2 * math.log2(4096) + 2


def test_largest_fitting_none_when_nothing_fits():
  assert topology.largest_fitting(lambda b: False, 16, 1, 4096) is None


def test_out_of_memory_errors_are_recognised():
  assert describe.is_out_of_memory(RuntimeError("RESOURCE_EXHAUSTED: Ran out of memory in memory space hbm"))
  assert not describe.is_out_of_memory(ValueError("shapes do not match"))


# ---- the compile (slow) ---------------------------------------------------------------------------------------

@pytest.mark.slow
def test_describe_compiles_for_a_tpu_topology():
  """configs/test.py compiled for one v5e chip (the cheapest slice: a few minutes on 2 CPU cores)."""
  if not topology.libtpu_installed():
    pytest.fail("libtpu is not installed, so nothing can be compiled for a TPU here: run `make install-tpu-aot`.")
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", JAX_PLATFORMS="cpu")
  result = subprocess.run([sys.executable, "-m", "xmc_gan_jax.main", "--config=configs/test.py", "--mode=describe",
                           "--topology=v5e:1x1"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
  assert result.returncode == 0, result.stderr[-3000:]
  out = result.stdout
  assert "TPU v5 lite" in out and "v5e:1x1" in out, out
  train = out[out.index("train step:"):out.index("eval sampler")]
  assert "memory per chip: arguments" in train, out
  assert "of 16 GiB HBM per chip: fits, headroom" in train, out
  flops = float(train.split("per chip per step: ")[1].split(" TFLOP")[0])
  assert flops > 0, out
  assert "bound (not a measurement): >= " in train and ("FLOP-bound" in train or "memory-bound" in train), out
  assert "XLA TPU cost estimate: " in train and "compiled in" in train, out
  assert "eval sampler" in out and out.count("bound (not a measurement)") == 2, out


def test_max_batch_lines_bisects_with_the_compiler_verdicts(monkeypatch):
  """The --max_batch loop on a fake compiler: peak memory grows 1 GiB per example per chip (16 GiB v5e: 16 fit),
  and the compiler runs out of memory above 20."""
  import jax  # pylint: disable=g-import-not-at-top
  from configs import test as test_config  # pylint: disable=g-import-not-at-top
  from xmc_gan_jax import sharding  # pylint: disable=g-import-not-at-top
  config = test_config.get_config()
  mesh = sharding.make_mesh(config.mesh, devices=jax.devices()[:1])

  def fake_compile(ab, candidate):
    per_chip = candidate.batch_size // candidate.optim.d_steps_per_g_step
    if per_chip > 20:
      raise RuntimeError("RESOURCE_EXHAUSTED: Ran out of memory in memory space hbm")
    return describe.Program(per_chip, 0.0, 0.0)

  monkeypatch.setattr(describe, "build_abstract", lambda candidate, mesh, count: None)
  monkeypatch.setattr(describe, "compile_train_step", fake_compile)
  monkeypatch.setattr(describe, "program_stats", lambda per_chip: describe.Stats(
      0.0, 0.0, None, argument=per_chip * 2.0 ** 30, output=0.0, temp=0.0))
  lines = describe.max_batch_lines(config, mesh, topology.CHIPS["v5e"], 1, start=8)
  unit = topology.batch_unit(1, (config.model.batch_norm_group_size, config.loss.contrastive_group_size))
  best = 16 // unit * unit
  assert f"largest per-chip batch that fits: {best} per sub-step" in lines[0], lines
  assert any("compiler: out of memory" in line for line in lines) or unit > 4, lines
