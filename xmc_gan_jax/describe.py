"""`--mode=describe`: parameter counts, FLOPs per train step and compiled memory, without training.

Everything is abstract (ShapeDtypeStructs): nothing is allocated, so the paper's 256 px model can be described on
a laptop. The text encoder's weights are not needed: its architecture comes from the folder's config.json or, for
well-known names such as `bert-base-uncased`, from the published hyper-parameters.

With `topology="v5e:2x2"` (needs libtpu: `make install-tpu-aot`) the train step and the evaluation sampler are
compiled ahead of time for that Cloud TPU slice on this machine, and the report gives per chip: memory against
HBM (fits / does not fit), FLOPs and bytes accessed, a roofline bound on the step time, XLA's own estimate where
valid, and the compile times. `max_batch=True` bisects the largest per-chip batch that fits (docs/tpu_aot.md).
"""
import copy
import dataclasses
import functools
import importlib.metadata
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
from etils import epath

from xmc_gan_jax import config_validation
from xmc_gan_jax import model_factory
from xmc_gan_jax import sharding
from xmc_gan_jax import steps
from xmc_gan_jax import topology as topology_lib
from xmc_gan_jax import train_state
from xmc_gan_jax.models import bert_weights
from xmc_gan_jax.models.text_encoder import encoder_for_features

# Published architectures, so that describe works before the weights are downloaded.
KNOWN_BERT_CONFIGS = {
    "bert-base-uncased": bert_weights.BertConfig(
        vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
        max_position_embeddings=512, type_vocab_size=2),
    "bert-large-uncased": bert_weights.BertConfig(
        vocab_size=30522, hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
        max_position_embeddings=512, type_vocab_size=2),
}
GIB = topology_lib.GIB
MAX_BATCH_CAP = 4096      # per chip per sub-step; --max_batch never probes above this


def text_encoder_architecture(path: str) -> tuple[bert_weights.BertConfig, str]:
  """(BertConfig, where it came from) for a folder, the default MiniLM, or a well-known model name."""
  folder = path or bert_weights.default_text_encoder_path()
  config_file = epath.Path(folder) / "config.json"  # the folder may be gs://...
  if config_file.is_file():
    return bert_weights.read_bert_config(folder), str(config_file)
  name = epath.Path(folder).name
  if name in KNOWN_BERT_CONFIGS:
    return KNOWN_BERT_CONFIGS[name], f"published {name} architecture (weights not found at {folder!r})"
  bert_weights.check_bert_folder(folder)  # raises with instructions
  raise AssertionError("unreachable")


def _abstract(tree, shardings):
  return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), tree, shardings)


# ---- abstract inputs ------------------------------------------------------------------------------------------

@dataclasses.dataclass
class Abstract:
  """What the runtime would hold for a config on a mesh, as ShapeDtypeStructs with their shardings."""
  mesh: Any
  bert_config: bert_weights.BertConfig
  source: str
  modules: Any
  state: Any                # abstract TrainState, sharded
  state_shardings: Any
  text_params: Any          # abstract, replicated


def build_abstract(config: ml_collections.ConfigDict, mesh, process_count: int | None = None) -> Abstract:
  """Validates `config` for `mesh` and builds the abstract state and text-encoder parameters (as Runtime does,
  without weights)."""
  config_validation.validate(config, sharding.batch_devices(mesh),
                             jax.process_count() if process_count is None else process_count)
  bert_config, source = text_encoder_architecture(config.text_encoder.path)
  text_module = encoder_for_features(bert_config, config.text_encoder.features)
  modules = model_factory.build_modules(config, text_module, bert_config.hidden_size)
  state = train_state.abstract_state(modules, config)
  state_sh = sharding.state_shardings(state, mesh)
  length = config.text_encoder.max_length
  text_params = jax.eval_shape(lambda: text_module.init(jax.random.key(0), jnp.zeros((1, length), jnp.int32),
                                                        jnp.ones((1, length), jnp.int32)))["params"]
  replicated = sharding.replicated(mesh)
  text_params = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=replicated), text_params)
  return Abstract(mesh, bert_config, source, modules, _abstract(state, state_sh), state_sh, text_params)


def abstract_batch(config: ml_collections.ConfigDict, mesh) -> dict[str, jax.ShapeDtypeStruct]:
  """A train batch [k, n, ...] sharded on the example axis, as Runtime.device_batch makes it."""
  k = config.optim.d_steps_per_g_step
  n = config.batch_size // k
  size, length = config.model.image_size, config.text_encoder.max_length
  batch_sh = sharding.batch_sharding(mesh, 1)
  return {"image": jax.ShapeDtypeStruct((k, n, size, size, 3), jnp.uint8, sharding=batch_sh),
          "token_ids": jax.ShapeDtypeStruct((k, n, length), jnp.int32, sharding=batch_sh),
          "token_mask": jax.ShapeDtypeStruct((k, n, length), jnp.int32, sharding=batch_sh)}


def sampler_batch_size(config: ml_collections.ConfigDict, mesh) -> int:
  """config.eval.batch_size, rounded up to a multiple of the mesh's batch shards."""
  shards = sharding.batch_devices(mesh)
  return -(-int(config.eval.batch_size) // shards) * shards


# ---- compiling ------------------------------------------------------------------------------------------------

@dataclasses.dataclass
class Program:
  compiled: Any
  lower_seconds: float
  compile_seconds: float


def _lower_and_compile(jitted, *args) -> Program:
  start = time.perf_counter()
  lowered = jitted.lower(*args)
  lowered_at = time.perf_counter()
  compiled = lowered.compile()
  return Program(compiled, lowered_at - start, time.perf_counter() - lowered_at)


def compile_train_step(ab: Abstract, config: ml_collections.ConfigDict) -> Program:
  """The jitted train step of Runtime (same shardings, state donated), compiled for `ab.mesh`."""
  replicated = sharding.replicated(ab.mesh)
  step_fn = jax.jit(functools.partial(steps.train_step, ab.modules),
                    in_shardings=(ab.state_shardings, replicated, sharding.batch_sharding(ab.mesh, 1), replicated),
                    out_shardings=(ab.state_shardings, replicated), donate_argnums=(0,))
  rng = jax.ShapeDtypeStruct((), jax.eval_shape(lambda: jax.random.key(0)).dtype, sharding=replicated)
  return _lower_and_compile(step_fn, ab.state, ab.text_params, abstract_batch(config, ab.mesh), rng)


def compile_sampler(ab: Abstract, config: ml_collections.ConfigDict) -> Program:
  """Runtime's sampler (EMA generator, inference BatchNorm) on one evaluation batch sharded on the example axis."""
  replicated = sharding.replicated(ab.mesh)
  rows = sharding.batch_sharding(ab.mesh)
  b, length = sampler_batch_size(config, ab.mesh), config.text_encoder.max_length
  sample_fn = jax.jit(functools.partial(steps.sample, ab.modules), out_shardings=replicated)
  tokens = jax.ShapeDtypeStruct((b, length), jnp.int32, sharding=rows)
  z = jax.ShapeDtypeStruct((b, config.model.z_dim), jnp.float32, sharding=rows)
  return _lower_and_compile(sample_fn, ab.state.ema_params, ab.state.g_batch_stats, ab.text_params, tokens, tokens,
                            z)


@dataclasses.dataclass
class Stats:
  """Numbers of one compiled program (per device: XLA analyses the partitioned program)."""
  flops: float
  bytes_accessed: float
  optimal_seconds: Any          # raw value of cost_analysis()["optimal_seconds"], or None when absent
  argument: float = float("nan")
  output: float = float("nan")
  alias: float = 0.0
  temp: float = float("nan")
  code: float = 0.0

  @property
  def peak(self) -> float:
    return topology_lib.peak_bytes(self.argument, self.output, self.alias, self.temp, self.code)


def program_stats(compiled) -> Stats:
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  cost = cost or {}
  stats = Stats(flops=float(cost.get("flops", float("nan"))),
                bytes_accessed=float(cost.get("bytes accessed", float("nan"))),
                optimal_seconds=cost.get("optimal_seconds"))
  memory = compiled.memory_analysis()
  if memory is not None:
    stats.argument = float(memory.argument_size_in_bytes)
    stats.output = float(memory.output_size_in_bytes)
    stats.alias = float(memory.alias_size_in_bytes)
    stats.temp = float(memory.temp_size_in_bytes)
    stats.code = float(memory.generated_code_size_in_bytes)
  return stats


def is_out_of_memory(error: Exception) -> bool:
  """Whether a compile failed because the program does not fit the device's memory."""
  text = str(error)
  return "RESOURCE_EXHAUSTED" in text or "Ran out of memory" in text or "exceeds the memory" in text


# ---- report ---------------------------------------------------------------------------------------------------

def header_lines(config: ml_collections.ConfigDict, ab: Abstract, platform: str) -> list[str]:
  k = config.optim.d_steps_per_g_step
  mesh = ab.mesh
  counts = {"generator": train_state.count_params(ab.state.g_params),
            "discriminator": train_state.count_params(ab.state.d_params),
            "text encoder (frozen)": train_state.count_params(ab.text_params)}
  lines = [f"config: {config.model.image_size} px, gf={config.model.gf_dim}, df={config.model.df_dim}, "
           f"z={config.model.z_dim}, text width {ab.bert_config.hidden_size} ({ab.source}; "
           f"{config.text_encoder.features} features), dtype {config.model.dtype}",
           f"mesh: {dict(mesh.shape)} over {mesh.devices.size} {platform} device(s); "
           f"global batch {config.batch_size} per step = {k} sub-batches of {config.batch_size // k}",
           "parameters:"]
  lines += [f"  {name:<22} {count / 1e6:9.2f} M" for name, count in counts.items()]
  return lines


def memory_line(stats: Stats, where: str = "device", what: str = "step") -> str:
  return (f"compiled {what} memory per {where}: arguments {stats.argument / GIB:.2f} GiB, "
          f"outputs {stats.output / GIB:.2f} GiB ({stats.alias / GIB:.2f} GiB aliased to donated arguments), "
          f"temporaries {stats.temp / GIB:.2f} GiB, generated code {stats.code / 2**20:.1f} MiB")


def estimate_text(raw) -> str:
  value = topology_lib.valid_estimate(raw)
  if value is None:
    return "no estimate" + ("" if raw is None else f" (optimal_seconds = {raw})")
  return f"{value * 1e3:.2f} ms"


def chip_lines(name: str, program: Program, stats: Stats, chip: topology_lib.Chip, examples: int,
               chips: int, what: str = "step") -> list[str]:
  """The per-chip section of one compiled program on a TPU slice."""
  fits, headroom = topology_lib.verdict(stats.peak, chip.hbm_gib)
  bound, compute, memory, kind = topology_lib.roofline(stats.flops, stats.bytes_accessed, chip)
  return [
      f"{name}: lowered in {program.lower_seconds:.1f} s, compiled in {program.compile_seconds:.1f} s",
      "  " + memory_line(stats, "chip", what),
      f"  peak {stats.peak / GIB:.2f} GiB of {chip.hbm_gib:g} GiB HBM per chip: "
      f"{'fits' if fits else 'does not fit'}, headroom {headroom:.2f} GiB",
      f"  per chip per {what}: {stats.flops / 1e12:.3f} TFLOP, {stats.bytes_accessed / 1e9:.2f} GB accessed "
      f"(XLA cost analysis; {stats.flops * chips / max(examples, 1) / 1e9:.2f} GFLOP per example)",
      f"  bound (not a measurement): >= {bound * 1e3:.2f} ms per {what}, {kind} (compute {compute * 1e3:.2f} ms at "
      f"{chip.bf16_tflops:g} TFLOP/s bf16, memory {memory * 1e3:.2f} ms at {chip.hbm_gbps:g} GB/s)",
      f"  XLA TPU cost estimate: {estimate_text(stats.optimal_seconds)}",
  ]


def _with_per_chip_batch(config: ml_collections.ConfigDict, per_chip: int, shards: int) -> ml_collections.ConfigDict:
  new = copy.deepcopy(config)
  new.batch_size = per_chip * shards * int(config.optim.d_steps_per_g_step)
  return new


def max_batch_lines(config: ml_collections.ConfigDict, mesh, chip: topology_lib.Chip, process_count: int,
                    start: int) -> list[str]:
  """Bisects the largest per-chip sub-batch whose train step compiles and fits the chip's HBM."""
  shards = sharding.batch_devices(mesh)
  unit = topology_lib.batch_unit(shards, (config.model.batch_norm_group_size, config.loss.contrastive_group_size))
  tried = []

  def fits(per_chip):
    candidate = _with_per_chip_batch(config, per_chip, shards)
    started = time.perf_counter()
    try:
      stats = program_stats(compile_train_step(build_abstract(candidate, mesh, process_count), candidate).compiled)
      ok, headroom = topology_lib.verdict(stats.peak, chip.hbm_gib)
      note = f"peak {stats.peak / GIB:.2f} GiB, headroom {headroom:.2f} GiB"
    except Exception as e:  # pylint: disable=broad-except
      if not is_out_of_memory(e):
        raise
      ok, note = False, "compiler: out of memory"
    tried.append(f"  per chip {per_chip:5d} (global batch {candidate.batch_size}): "
                 f"{'fits' if ok else 'does not fit'}, {note}, {time.perf_counter() - started:.0f} s")
    return ok

  best = topology_lib.largest_fitting(fits, start, unit, MAX_BATCH_CAP)
  k = int(config.optim.d_steps_per_g_step)
  result = ("no per-chip batch fits" if best is None else
            f"largest per-chip batch that fits: {best} per sub-step (global batch {best * shards * k} = {k} "
            f"sub-batches of {best * shards})")
  return [f"max batch (train step, steps of {unit} per chip, cap {MAX_BATCH_CAP}): {result}"] + tried


def _libtpu_version() -> str:
  try:
    return importlib.metadata.version("libtpu")
  except importlib.metadata.PackageNotFoundError:
    return "?"


def describe_topology(config: ml_collections.ConfigDict, topology_name: str, max_batch: bool = False) -> str:
  """Compiles the train step and the sampler for a Cloud TPU slice (compile-only devices) and reports per chip."""
  topo = topology_lib.parse(topology_name)
  devices = topology_lib.devices(topo)
  process_count = len({d.process_index for d in devices})
  mesh = sharding.make_mesh(config.mesh, devices=devices)
  ab = build_abstract(config, mesh, process_count)
  lines = header_lines(config, ab, devices[0].device_kind)
  lines.append(f"target: {topo.name} ({topo.num_chips} chips of {devices[0].device_kind}, {process_count} "
               f"host(s)), one device per chip; compile-only devices from libtpu {_libtpu_version()}, no TPU used")
  started = time.perf_counter()
  try:
    train = compile_train_step(ab, config)
  except Exception as e:  # pylint: disable=broad-except
    if not is_out_of_memory(e):
      raise
    lines.append(f"train step: does not fit (the compiler ran out of memory after "
                 f"{time.perf_counter() - started:.0f} s): {str(e).splitlines()[0][:300]}")
  else:
    lines += chip_lines("train step", train, program_stats(train.compiled), topo.chip, config.batch_size,
                        topo.num_chips)
  b = sampler_batch_size(config, mesh)
  sampler = compile_sampler(ab, config)
  lines += chip_lines(f"eval sampler (batch {b}, EMA generator + text encoder)", sampler,
                      program_stats(sampler.compiled), topo.chip, b, topo.num_chips, "call")
  if max_batch:
    shards = sharding.batch_devices(mesh)
    lines += max_batch_lines(config, mesh, topo.chip, process_count,
                             start=max(1, config.batch_size // int(config.optim.d_steps_per_g_step) // shards))
  return "\n".join(lines)


def describe(config: ml_collections.ConfigDict, topology: str | None = None, max_batch: bool = False) -> str:
  """Returns a printable report for `config` on the mesh built from `config.mesh` (over this machine's devices,
  or over the Cloud TPU slice `topology`, e.g. "v5e:2x2", compiled ahead of time)."""
  if topology:
    return describe_topology(config, topology, max_batch)
  if max_batch:
    raise ValueError("--max_batch needs --topology (a chip whose HBM to fit).")
  mesh = sharding.make_mesh(config.mesh)
  ab = build_abstract(config, mesh)
  stats = program_stats(compile_train_step(ab, config).compiled)
  lines = header_lines(config, ab, jax.devices()[0].platform)
  lines.append(f"train step FLOPs (XLA cost analysis, per device): {stats.flops / 1e12:.3f} TFLOP "
               f"({stats.flops * mesh.devices.size / max(config.batch_size, 1) / 1e9:.2f} GFLOP per example)")
  if stats.argument == stats.argument:  # memory analysis available
    lines.append(memory_line(stats))
  return "\n".join(lines)
