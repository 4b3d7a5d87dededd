"""Benchmarks the jitted train step of a config on this machine's backend (random data, no TensorFlow).

    python tools/bench_train.py --config=configs/shapes.py --steps=30
    python tools/bench_train.py --config=configs/coco.py:res=128 --config.batch_size=8 --steps=3
    python tools/bench_train.py --config=configs/coco.py:res=256 --config.model.dtype=bfloat16 --json=coco256.json

Reports, for the train step that training runs (Runtime's jit, shardings and donation, compiled ahead here):
compile time (lower + compile), median step time over --steps timed steps after one warm-up (batches already on
the devices, as training's prefetch leaves them), steps/s, images/s per device, FLOPs per step per device (XLA
cost analysis of the compiled step, as `--mode=describe`), model FLOP utilisation against the device kind's
published dense bf16 peak (none for CPUs) and against a dense matmul ceiling measured here on one device, and
peak device memory (the runtime's counter where the backend has one, else the compiled memory analysis).
The text encoder is the config's folder when it exists, otherwise a randomly initialised encoder of the same
architecture (the time does not depend on the weights). `--json=PATH` writes the numbers.
"""
import json
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # pylint: disable=g-import-not-at-top,g-multiple-import
import jax
import jax.numpy as jnp
import numpy as np
from ml_collections import config_flags

from xmc_gan_jax import describe, runtime
from xmc_gan_jax import topology as topology_lib
from xmc_gan_jax.data import random_source
from xmc_gan_jax.models import text_encoder as text_encoder_lib
from xmc_gan_jax.models.text_encoder import TextEncoder, load_text_encoder

FLAGS = flags.FLAGS


def define_flags() -> None:
  """The command-line flags (defined on demand, so that importing this module defines none)."""
  config_flags.DEFINE_config_file("config", "configs/test.py", "Config to benchmark.", lock_config=True)
  flags.DEFINE_integer("steps", 5, "Timed steps after the warm-up step.")
  flags.DEFINE_integer("matmul_size", 0, "Side N of the N x N matmul that measures the ceiling (0: 1024 on CPU, "
                       "8192 on accelerators).")
  flags.DEFINE_string("json", "", "Also write the numbers to this JSON file.")

# Published dense bf16 peaks, TFLOP/s per device (jax's device_kind, matched by substring in this order). TPUs come
# from topology.CHIPS (one device per chip); GPUs from NVIDIA's data sheets (without sparsity).
GPU_BF16_TFLOPS = (("H100 PCIe", 756.0), ("H100", 989.0), ("H200", 989.0), ("A100", 312.0))


def peak_bf16_tflops(device_kind: str) -> float | None:
  """The device kind's published dense bf16 peak in TFLOP/s, or None (CPUs, unknown devices)."""
  for chip in sorted(topology_lib.CHIPS.values(), key=lambda c: -len(c.device_kind)):  # "TPU v5 lite" first
    if device_kind == chip.device_kind or device_kind.startswith(chip.device_kind + " "):
      return float(chip.bf16_tflops)
  for name, tflops in GPU_BF16_TFLOPS:
    if name in device_kind:
      return tflops
  return None


def matmul_ceiling(device, size: int, dtype, repeats: int = 5) -> float:
  """Best FLOP/s of a jitted [size, size] @ [size, size] matmul in `dtype` on `device` (2 size^3 FLOPs each)."""
  keys = jax.random.split(jax.random.key(0))
  a, b = (jax.device_put(jax.random.normal(k, (size, size), dtype), device) for k in keys)
  matmul = jax.jit(lambda x, y: x @ y)
  jax.block_until_ready(matmul(a, b))
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(matmul(a, b))
    best = min(best, time.perf_counter() - start)
  return 2.0 * size**3 / best


def peak_memory_bytes(stats: describe.Stats) -> tuple[float, str]:
  """(bytes, source): the first device's peak-in-use counter where the backend keeps one, else the compiled
  step's arguments + outputs - aliased + temporaries + code."""
  memory = jax.local_devices()[0].memory_stats() or {}
  if "peak_bytes_in_use" in memory:
    return float(memory["peak_bytes_in_use"]), "device counter"
  return stats.peak, "compiled memory analysis"


def text_encoder_for(config) -> TextEncoder:
  try:
    return load_text_encoder(config.text_encoder.path, config.text_encoder.pooling, config.text_encoder.features)
  except FileNotFoundError:
    bert_config, _ = describe.text_encoder_architecture(config.text_encoder.path)
    module = text_encoder_lib.encoder_for_features(bert_config, config.text_encoder.features)
    ids = jnp.ones((1, config.text_encoder.max_length), jnp.int32)
    params = module.init(jax.random.key(0), ids, ids)["params"]
    return TextEncoder(module=module, params=params, vocab_path="", hidden_size=bert_config.hidden_size,
                       pooling=config.text_encoder.pooling)


def benchmark(config, steps: int, matmul_size: int = 0) -> dict:
  """The numbers of the report for `config` (see the module docstring); times in s, FLOPs per device."""
  run = runtime.Runtime(config, text_encoder=text_encoder_for(config))
  state = run.init_state()
  batches = [run.device_batch(random_source.random_batch(
      config.seed, i, config.batch_size, config.model.image_size, config.text_encoder.max_length,
      run.text.vocab_size)) for i in range(2)]
  start = time.perf_counter()
  compiled = run.train_step.lower(state, run.text_params, batches[0], run.rng).compile()
  compile_s = time.perf_counter() - start
  stats = describe.program_stats(compiled)
  start = time.perf_counter()
  state, metrics = compiled(state, run.text_params, batches[0], run.rng)
  jax.block_until_ready((state, metrics))
  warmup_s = time.perf_counter() - start
  times = []
  for i in range(steps):
    start = time.perf_counter()
    state, metrics = compiled(state, run.text_params, batches[(i + 1) % 2], run.rng)
    jax.block_until_ready((state, metrics))
    times.append(time.perf_counter() - start)
  step_s = statistics.median(times)
  device = jax.local_devices()[0]
  devices = int(run.mesh.devices.size)
  size = matmul_size or (1024 if device.platform == "cpu" else 8192)
  ceilings = {name: matmul_ceiling(device, size, dtype) for name, dtype in
              (("bfloat16", jnp.bfloat16), ("float32", jnp.float32))}
  ceiling = max(ceilings.values())
  peak_tflops = peak_bf16_tflops(device.device_kind)
  flops_per_s = stats.flops / step_s  # per device
  memory, memory_source = peak_memory_bytes(stats)
  return {
      "config": {"image_size": config.model.image_size, "gf_dim": config.model.gf_dim,
                 "df_dim": config.model.df_dim, "batch_size": config.batch_size,
                 "d_steps_per_g_step": int(config.optim.d_steps_per_g_step), "dtype": str(config.model.dtype)},
      "backend": device.platform, "device_kind": device.device_kind, "devices": devices,
      "cpu_cores": os.cpu_count(), "load_average_1min": os.getloadavg()[0],
      "compile_s": compile_s, "warmup_step_s": warmup_s, "step_times_s": times, "median_step_s": step_s,
      "steps_per_s": 1.0 / step_s, "images_per_s_per_device": config.batch_size / step_s / devices,
      "flops_per_step_per_device": stats.flops, "bytes_accessed_per_step_per_device": stats.bytes_accessed,
      "achieved_tflops_per_device": flops_per_s / 1e12,
      "peak_bf16_tflops": peak_tflops, "mfu_vs_peak": None if peak_tflops is None else flops_per_s / (peak_tflops * 1e12),
      "matmul_size": size, "matmul_tflops": {k: v / 1e12 for k, v in ceilings.items()},
      "mfu_vs_matmul": flops_per_s / ceiling,
      "peak_memory_bytes": memory, "peak_memory_source": memory_source,
      "metrics_finite": bool(np.all([np.isfinite(np.asarray(v)).all() for v in jax.tree.leaves(metrics)])),
  }


def table(r: dict) -> str:
  """A short printable table of `benchmark`'s numbers."""
  c = r["config"]
  peak = ("n/a (no published peak for this device)" if r["mfu_vs_peak"] is None else
          f"{100 * r['mfu_vs_peak']:.1f} % of {r['peak_bf16_tflops']:g} TFLOP/s bf16 peak")
  matmul = ", ".join(f"{k} {v:.3g}" for k, v in r["matmul_tflops"].items())
  rows = [
      ("config", f"{c['image_size']} px, gf={c['gf_dim']} df={c['df_dim']}, batch {c['batch_size']} "
                 f"({c['d_steps_per_g_step']} sub-batches), {c['dtype']}"),
      ("devices", f"{r['devices']} x {r['device_kind']} ({r['backend']}; {r['cpu_cores']} host cores, "
                  f"load {r['load_average_1min']:.1f})"),
      ("compile", f"{r['compile_s']:.1f} s (then first step {r['warmup_step_s']:.2f} s)"),
      ("step", f"{r['median_step_s'] * 1e3:.1f} ms median of {len(r['step_times_s'])}, "
               f"{r['steps_per_s']:.2f} steps/s"),
      ("images/s per device", f"{r['images_per_s_per_device']:.1f}"),
      ("FLOPs per step", f"{r['flops_per_step_per_device'] / 1e9:.2f} GFLOP per device (XLA cost analysis), "
                         f"{r['achieved_tflops_per_device'] * 1e3:.1f} GFLOP/s achieved"),
      ("MFU vs peak", peak),
      ("MFU vs matmul", f"{100 * r['mfu_vs_matmul']:.1f} % of the measured {r['matmul_size']}^2 matmul "
                        f"ceiling (TFLOP/s: {matmul})"),
      ("peak memory", f"{r['peak_memory_bytes'] / 2**30:.3f} GiB per device ({r['peak_memory_source']})"),
  ]
  width = max(len(name) for name, _ in rows)
  return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def main(argv):
  del argv
  result = benchmark(FLAGS.config, FLAGS.steps, FLAGS.matmul_size)
  print(table(result))
  if FLAGS.json:
    with open(FLAGS.json, "w", encoding="utf-8") as f:
      json.dump(result, f, indent=1)


if __name__ == "__main__":
  define_flags()
  app.run(main)
