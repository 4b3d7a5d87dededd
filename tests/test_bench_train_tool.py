"""tools/bench_train.py: runs with TensorFlow unimportable, and its numbers agree with each other and with
`--mode=describe`'s FLOP count; the peak table and the printed table."""
import json
import os
import statistics
import subprocess
import sys

import pytest

from configs import test as test_config
from xmc_gan_jax import describe
from xmc_gan_jax import sharding

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))
import bench_train  # pylint: disable=g-import-not-at-top,wrong-import-position

# Runs the tool's main as on a machine without TensorFlow: `import tensorflow` raises ImportError and
# importlib.util.find_spec("tensorflow") is None (etils probes it); exit code 3 if one got loaded anyway.
_BLOCKED_RUN = """
import sys
ABSENT = ("tensorflow", "tensorflow_datasets", "tensorflow_text")
for name in ABSENT:
  sys.modules[name] = None
sys.path.insert(0, "tools")
from absl import app
import bench_train
bench_train.define_flags()
try:
  app.run(bench_train.main, argv=["bench_train"] + sys.argv[1:])
except SystemExit as e:
  code = e.code
loaded = [m for m in sys.modules if m.split(".")[0] in ABSENT and sys.modules[m] is not None]
if loaded:
  print("TENSORFLOW LOADED:", loaded, file=sys.stderr)
  sys.exit(3)
sys.exit(code)
"""


def test_peak_table():
  assert bench_train.peak_bf16_tflops("TPU v4") == 275
  assert bench_train.peak_bf16_tflops("TPU v5 lite") == 197
  assert bench_train.peak_bf16_tflops("TPU v5") == 459
  assert bench_train.peak_bf16_tflops("TPU v6 lite") == 918
  assert bench_train.peak_bf16_tflops("NVIDIA H100 80GB HBM3") == 989
  assert bench_train.peak_bf16_tflops("NVIDIA H100 PCIe") == 756
  assert bench_train.peak_bf16_tflops("NVIDIA H200") == 989
  assert bench_train.peak_bf16_tflops("NVIDIA A100-SXM4-80GB") == 312
  assert bench_train.peak_bf16_tflops("cpu") is None
  assert bench_train.peak_bf16_tflops("TPU v7x") is None


def test_matmul_ceiling_is_a_plausible_rate():
  import jax  # pylint: disable=import-outside-toplevel
  rate = bench_train.matmul_ceiling(jax.devices()[0], 128, jax.numpy.float32, repeats=2)
  assert 1e6 < rate < 1e15


@pytest.mark.slow
def test_runs_without_tensorflow_and_its_numbers_agree(tmp_path):
  import jax  # pylint: disable=import-outside-toplevel
  # One device (a GPU machine's case), which compiles in a fraction of the 8-device time on this CPU.
  out = tmp_path / "bench.json"
  proc = subprocess.run(
      [sys.executable, "-c", _BLOCKED_RUN, "--config=configs/test.py", "--steps=2", "--matmul_size=256",
       f"--json={out}"],
      cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT, XLA_FLAGS="--xla_force_host_platform_device_count=1"),
      capture_output=True, text=True, timeout=1200, check=False)
  assert proc.returncode == 0, proc.stderr[-4000:]
  for row in ("compile", "step", "images/s per device", "FLOPs per step", "MFU vs peak", "MFU vs matmul",
              "peak memory"):
    assert row in proc.stdout, proc.stdout
  r = json.loads(out.read_text())
  config = test_config.get_config()
  assert r["devices"] == 1 and r["backend"] == "cpu" and r["config"]["batch_size"] == config.batch_size
  assert len(r["step_times_s"]) == 2 and min(r["step_times_s"]) > 0 and r["compile_s"] > 0
  assert r["median_step_s"] == pytest.approx(statistics.median(r["step_times_s"]))
  assert r["steps_per_s"] == pytest.approx(1 / r["median_step_s"])
  assert r["images_per_s_per_device"] == pytest.approx(config.batch_size / r["median_step_s"])
  assert r["flops_per_step_per_device"] > 0 and r["peak_memory_bytes"] > 0 and r["metrics_finite"]
  ceiling = max(r["matmul_tflops"].values()) * 1e12
  assert r["mfu_vs_matmul"] == pytest.approx(r["flops_per_step_per_device"] / r["median_step_s"] / ceiling)
  assert r["mfu_vs_peak"] is None and r["peak_bf16_tflops"] is None  # no published peak for a CPU
  # The same FLOP count as --mode=describe for this config on this mesh.
  mesh = sharding.make_mesh(config.mesh, jax.devices()[:1])
  compiled = describe.compile_train_step(describe.build_abstract(config, mesh), config).compiled
  assert r["flops_per_step_per_device"] == pytest.approx(describe.program_stats(compiled).flops, rel=1e-6)


def test_table_lists_every_number():
  result = {"config": {"image_size": 32, "gf_dim": 4, "df_dim": 4, "batch_size": 16, "d_steps_per_g_step": 2,
                       "dtype": "float32"},
            "backend": "gpu", "device_kind": "NVIDIA H200", "devices": 1, "cpu_cores": 16, "load_average_1min": 0.5,
            "compile_s": 12.0, "warmup_step_s": 0.5, "step_times_s": [0.01, 0.02, 0.03], "median_step_s": 0.02,
            "steps_per_s": 50.0, "images_per_s_per_device": 800.0, "flops_per_step_per_device": 4e12,
            "achieved_tflops_per_device": 200.0, "peak_bf16_tflops": 989.0, "mfu_vs_peak": 200 / 989,
            "matmul_size": 8192, "matmul_tflops": {"bfloat16": 700.0, "float32": 50.0}, "mfu_vs_matmul": 200 / 700,
            "peak_memory_bytes": 3 * 2**30, "peak_memory_source": "device counter"}
  text = bench_train.table(result)
  for expected in ("20.0 ms median of 3", "50.00 steps/s", "800.0", "4000.00 GFLOP", "20.2 % of 989 TFLOP/s",
                   "28.6 % of the measured 8192^2", "3.000 GiB"):
    assert expected in text, text
