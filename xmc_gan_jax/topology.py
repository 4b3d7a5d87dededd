"""Cloud TPU topologies for ahead-of-time compilation on a machine without a TPU (`--mode=describe --topology=`).

With libtpu installed (`make install-tpu-aot`), `jax.experimental.topologies.get_topology_desc` returns
compile-only devices of a TPU slice; a jit lowered with shardings over a mesh of them compiles for that slice on a
CPU machine. This module names slices, holds the chips' published specs, and does the arithmetic of the report
(per-chip memory verdict, roofline bound, validity of XLA's time estimate). Only `devices()` needs libtpu.

Chip specs are Google Cloud's published per-chip figures (cloud.google.com/tpu/docs/v4, /v5e, /v5p, /v6e): HBM
capacity, HBM bandwidth and peak bf16 FLOP/s. They are nominal: the runtime reserves some HBM, and no real step
reaches the peaks.
"""
import dataclasses
import importlib.util
import math
import os
import re

INSTALL_HINT = "run `make install-tpu-aot` (pip-installs the libtpu that jax[tpu] pins for this jax into .venv)"


@dataclasses.dataclass(frozen=True)
class Chip:
  name: str
  hbm_gib: float          # HBM per chip, GiB
  bf16_tflops: float      # peak dense bf16 matmul, TFLOP/s per chip
  hbm_gbps: float         # HBM bandwidth, GB/s per chip
  device_kind: str        # what jax reports as Device.device_kind
  chip_config: str        # get_topology_desc's chip_config_name: "megacore" = one device per chip
  dims: int               # 3 for the 3-D torus generations, 2 for the lite chips


CHIPS = {
    "v4": Chip("v4", 32, 275, 1228, "TPU v4", "megacore", 3),
    "v5e": Chip("v5e", 16, 197, 819, "TPU v5 lite", "default", 2),
    "v5p": Chip("v5p", 95, 459, 2765, "TPU v5", "megacore", 3),
    "v6e": Chip("v6e", 32, 918, 1640, "TPU v6 lite", "default", 2),
}
_ALIASES = {"v5litepod": "v5e", "v5lite": "v5e", "v6": "v6e", "v5": "v5p"}

# Cloud accelerator types (v4-8, v5litepod-16, ...) -> chip grid. v4/v5p names count TensorCores (2 per chip),
# v5e/v6e names count chips.
_CLOUD_SHAPES_3D = {8: "2x2x1", 16: "2x2x2", 32: "2x2x4", 64: "2x4x4", 128: "4x4x4", 256: "4x4x8", 512: "4x8x8"}
_CLOUD_SHAPES_2D = {1: "1x1", 4: "2x2", 8: "2x4", 16: "4x4", 32: "4x8", 64: "8x8", 128: "8x16", 256: "16x16"}


@dataclasses.dataclass(frozen=True)
class Topology:
  chip: Chip
  shape: tuple[int, ...]

  @property
  def name(self) -> str:
    """The name get_topology_desc takes, e.g. "v5e:2x2"."""
    return f"{self.chip.name}:{'x'.join(map(str, self.shape))}"

  @property
  def num_chips(self) -> int:
    return math.prod(self.shape)

  @property
  def chips_per_host_bounds(self) -> tuple[int, int, int]:
    """Cloud TPU VMs hold up to 2x2x1 chips (4); smaller slices sit on one host."""
    full = tuple(self.shape) + (1,) * (3 - len(self.shape))
    return tuple(min(d, b) for d, b in zip(full, (2, 2, 1)))

  @property
  def num_hosts(self) -> int:
    return self.num_chips // math.prod(self.chips_per_host_bounds)


def parse(name: str) -> Topology:
  """"v5e:2x2", "v4:2x2x1", or a Cloud accelerator type ("v4-8", "v5litepod-16", "v6e-4") -> Topology."""
  text = name.strip().lower()
  match = re.fullmatch(r"([a-z0-9]+):(\d+(?:x\d+)*)", text)
  cloud = re.fullmatch(r"([a-z0-9]+)-(\d+)", text)
  if match:
    generation, shape_text = match.groups()
  elif cloud:
    generation, count = cloud.group(1), int(cloud.group(2))
  else:
    raise ValueError(f"--topology={name!r}: expected GENERATION:AxB[xC] (e.g. v5e:2x2, v4:2x2x1) or a Cloud "
                     f"accelerator type (e.g. v4-8, v5litepod-16); generations {sorted(CHIPS)}.")
  generation = _ALIASES.get(generation, generation)
  if generation not in CHIPS:
    raise ValueError(f"--topology={name!r}: unknown TPU generation {generation!r}; known: {sorted(CHIPS)}.")
  chip = CHIPS[generation]
  if cloud:
    table = _CLOUD_SHAPES_3D if chip.dims == 3 else _CLOUD_SHAPES_2D
    if count not in table:
      raise ValueError(f"--topology={name!r}: no known chip grid for {count}; use {chip.name}:AxB... "
                       f"(known sizes {sorted(table)}).")
    shape_text = table[count]
  shape = tuple(int(d) for d in shape_text.split("x"))
  if len(shape) != chip.dims or min(shape) < 1:
    raise ValueError(f"--topology={name!r}: {chip.name} grids have {chip.dims} dimensions, e.g. "
                     f"{chip.name}:{'x'.join(['2'] * (chip.dims - 1) + ['1'])}.")
  return Topology(chip, shape)


def libtpu_installed() -> bool:
  return importlib.util.find_spec("libtpu") is not None


def devices(topology: Topology) -> list:
  """The slice's compile-only devices, one per chip (v4/v5p as megacore). Needs libtpu, not a TPU."""
  if not libtpu_installed():
    raise RuntimeError(f"--topology={topology.name} needs libtpu to compile for a TPU on this machine: "
                       f"{INSTALL_HINT}.")
  # libtpu takes /tmp/libtpu_lockfile for the TPU it expects to own; compile-only devices own nothing, so two
  # describes (or one next to a TPU job) may run at once.
  os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
  from jax.experimental import topologies  # pylint: disable=g-import-not-at-top
  desc = topologies.get_topology_desc(topology_name=topology.name, platform="tpu",
                                      chip_config_name=topology.chip.chip_config,
                                      chips_per_host_bounds=topology.chips_per_host_bounds, num_slices=1)
  found = list(desc.devices)
  if len(found) != topology.num_chips:
    raise RuntimeError(f"{topology.name}: libtpu gave {len(found)} devices for {topology.num_chips} chips; "
                       "expected one (megacore) device per chip.")
  return found


# ---- report arithmetic (pure) ---------------------------------------------------------------------------------

GIB = 2.0 ** 30


def peak_bytes(argument: float, output: float, alias: float, temp: float, code: float = 0.0) -> float:
  """Bytes a program holds on a chip at its peak: arguments + outputs not aliased to donated arguments +
  temporaries + generated code."""
  return argument + output - alias + temp + code


def verdict(used_bytes: float, hbm_gib: float) -> tuple[bool, float]:
  """(fits, headroom in GiB) of `used_bytes` against a chip's nominal HBM; headroom < 0 when it does not fit."""
  headroom = hbm_gib - used_bytes / GIB
  return headroom >= 0, headroom


def roofline(flops: float, bytes_accessed: float, chip: Chip) -> tuple[float, float, float, str]:
  """(bound seconds, compute seconds, memory seconds, "FLOP-bound" | "memory-bound") for one chip: a step takes
  at least max(FLOPs / peak, bytes / bandwidth). A lower bound, not a measurement."""
  compute = flops / (chip.bf16_tflops * 1e12)
  memory = bytes_accessed / (chip.hbm_gbps * 1e9)
  return max(compute, memory), compute, memory, ("FLOP-bound" if compute >= memory else "memory-bound")


def valid_estimate(seconds) -> float | None:
  """XLA's `optimal_seconds` when usable: a finite positive number; None for absent, NaN, inf, <= 0 (the TPU cost
  model returns negative values for some programs, e.g. a generator forward pass)."""
  try:
    value = float(seconds)
  except (TypeError, ValueError):
    return None
  return value if math.isfinite(value) and value > 0 else None


def batch_unit(shards: int, groups: tuple[int, ...]) -> int:
  """Smallest per-chip sub-batch b such that b * shards is divisible by every nonzero group size (BatchNorm and
  contrastive groups must divide the sub-batch)."""
  unit = 1
  for group in groups:
    if group:
      need = group // math.gcd(group, shards)
      unit = unit * need // math.gcd(unit, need)
  return unit


def largest_fitting(fits, start: int, unit: int, cap: int) -> int | None:
  """Largest multiple of `unit` in [unit, cap] for which `fits(b)` holds, assuming fits is monotone (true up to
  some b, false above): doubles from `start` while it fits, then bisects. None if not even `unit` fits."""
  top = max(1, cap // unit)
  lo, hi = 0, min(max(1, start // unit), top)      # in units; lo fits (0: none known), hi is the next probe
  if fits(hi * unit):
    lo = hi
    while True:
      nxt = min(2 * lo, top)
      if nxt == lo:
        return lo * unit
      if not fits(nxt * unit):
        hi = nxt
        break
      lo = nxt
  while hi - lo > 1:
    mid = (lo + hi) // 2
    if fits(mid * unit):
      lo = mid
    else:
      hi = mid
  return lo * unit if lo else None
