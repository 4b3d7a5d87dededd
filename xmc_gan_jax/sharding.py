"""Device mesh from config, shardings for the state and the batch, and host-local -> global arrays.

The mesh has axes ('data', 'fsdp'). The batch is split over both axes; parameters are replicated when fsdp == 1
and otherwise sharded along their largest dimension divisible by the fsdp size. `DevicePrefetch` places the next
batches on the devices while the current step runs.
"""
import collections
from collections.abc import Callable, Iterator
from typing import Any

import jax
import ml_collections
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

BATCH_AXES = ("data", "fsdp")


def make_mesh(mesh_config: ml_collections.ConfigDict, devices=None) -> Mesh:
  """Builds the ('data', 'fsdp') mesh; `data == -1` takes every device the fsdp axis leaves."""
  devices = list(jax.devices() if devices is None else devices)
  fsdp = int(mesh_config.fsdp)
  data = int(mesh_config.data)
  if fsdp < 1 or len(devices) % fsdp:
    raise ValueError(f"mesh.fsdp={fsdp} must divide the device count {len(devices)}.")
  if data == -1:
    data = len(devices) // fsdp
  if data * fsdp != len(devices):
    raise ValueError(
        f"mesh.data * mesh.fsdp = {data} * {fsdp} must equal the device count {len(devices)}; "
        "set --config.mesh.data=-1 to use all devices.")
  return jax.make_mesh((data, fsdp), BATCH_AXES, axis_types=(AxisType.Auto, AxisType.Auto), devices=devices)


def batch_devices(mesh: Mesh) -> int:
  """Number of shards the batch axis is split into."""
  return mesh.shape["data"] * mesh.shape["fsdp"]


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh, leading_dims: int = 0) -> NamedSharding:
  """Sharding of a batch array whose axis `leading_dims` is the example axis (earlier axes are replicated)."""
  return NamedSharding(mesh, P(*([None] * leading_dims), BATCH_AXES))


def _param_spec(shape: tuple[int, ...], fsdp: int) -> P:
  if fsdp == 1 or not shape:
    return P()
  candidates = [(size, axis) for axis, size in enumerate(shape) if size % fsdp == 0 and size >= fsdp]
  if not candidates:
    return P()
  _, axis = max(candidates)
  spec = [None] * len(shape)
  spec[axis] = "fsdp"
  return P(*spec)


def state_shardings(abstract_tree: Any, mesh: Mesh) -> Any:
  """Shardings for a pytree of arrays/ShapeDtypeStructs: replicated, or fsdp-sharded on the largest dim."""
  fsdp = mesh.shape["fsdp"]
  return jax.tree.map(lambda x: NamedSharding(mesh, _param_spec(tuple(np.shape(x)), fsdp)), abstract_tree)


def to_global_batch(local_batch: dict[str, np.ndarray], mesh: Mesh, leading_dims: int = 0) -> dict[str, jax.Array]:
  """Assembles process-local numpy arrays into global jax.Arrays sharded on the example axis."""
  sharding = batch_sharding(mesh, leading_dims)
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in local_batch.items()}


class DevicePrefetch(Iterator):
  """Iterator of `place(item)` for the items of `source`, placed `size` items ahead of the consumer.

  `place` (e.g. host batch -> global jax.Arrays) starts the host -> device copies, which run asynchronously, so
  while step n runs, the batches of steps n+1 .. n+size-1 are already on their way to the devices (for jit
  shardings; flax's `jax_utils.prefetch_to_device` is for pmap): `size` = 2 holds batch n+1 on the devices when
  step n's batch is handed out. Order and values are the source's. The source's end (StopIteration) or error is
  raised only after the items placed before it have been handed out.
  `stats()` is the source's (it counts items up to `size` ahead of the consumer).
  """

  def __init__(self, source: Iterator, place: Callable[[Any], Any], size: int = 2):
    if size < 1:
      raise ValueError(f"prefetch size must be >= 1, got {size}.")
    self._source, self._place, self._size = source, place, size
    self._ready: collections.deque = collections.deque()
    self._error: Exception | None = None   # the source's StopIteration or error, raised once drained

  def _fill(self) -> None:
    while self._error is None and len(self._ready) < self._size:
      try:
        item = next(self._source)
      except Exception as e:  # pylint: disable=broad-except
        self._error = e
        return
      self._ready.append(self._place(item))

  def __next__(self):
    self._fill()
    if self._ready:
      return self._ready.popleft()
    raise self._error

  def stats(self) -> dict:
    return getattr(self._source, "stats", dict)()
