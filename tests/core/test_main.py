"""The command line as a user runs it: train, resume, describe, unknown keys; core imports without TensorFlow."""
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow  # fresh Python processes that import JAX and TensorFlow and compile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _run(*args, timeout=600):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", XLA_FLAGS="--xla_force_host_platform_device_count=2")
  return subprocess.run([sys.executable, "-m", "xmc_gan_jax.main", *args], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=timeout)


def test_train_then_resume(tmp_path):
  workdir = str(tmp_path / "run")
  first = _run("--config=configs/test.py", f"--workdir={workdir}", "--config.total_steps=2")
  assert first.returncode == 0, first.stderr[-3000:]
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints")))[:1] == ["2"]
  assert any(f.startswith("events.out.tfevents") for f in os.listdir(workdir))
  second = _run("--config=configs/test.py", f"--workdir={workdir}", "--config.total_steps=3")
  assert second.returncode == 0, second.stderr[-3000:]
  assert "Resuming from checkpoint at step 2" in second.stderr
  assert "3" in os.listdir(os.path.join(workdir, "checkpoints"))


def test_unknown_config_key_is_an_error(tmp_path):
  result = _run("--config=configs/test.py", f"--workdir={tmp_path}", "--config.no_such_key=3")
  assert result.returncode != 0
  assert "no_such_key" in result.stderr


def test_describe_prints_counts_flops_memory():
  result = _run("--config=configs/test.py", "--mode=describe")
  assert result.returncode == 0, result.stderr[-3000:]
  for text in ("generator", "discriminator", "text encoder", "TFLOP", "memory"):
    assert text in result.stdout, result.stdout


CORE_MODULES = ("xmc_gan_jax.steps", "xmc_gan_jax.train_state", "xmc_gan_jax.losses", "xmc_gan_jax.sharding",
                "xmc_gan_jax.runtime", "xmc_gan_jax.describe", "xmc_gan_jax.data.random_source")


def test_core_imports_without_tensorflow():
  """One fresh interpreter imports every core module; none may pull in TensorFlow."""
  code = ("import sys\n"
          f"for name in {CORE_MODULES!r}:\n"
          "  __import__(name)\n"
          "  if 'tensorflow' in sys.modules:\n"
          "    sys.exit(f'{name} imported tensorflow')\n")
  result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert result.returncode == 0, result.stderr[-2000:]
