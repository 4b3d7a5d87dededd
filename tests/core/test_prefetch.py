"""sharding.DevicePrefetch: order and values kept, placed ahead of the consumer, the source's end and errors
raised in their place."""
import jax
import numpy as np
import pytest

from configs import test as test_config
from xmc_gan_jax import sharding


def _host_batches(n):
  rng = np.random.default_rng(0)
  return [{"image": rng.integers(0, 256, (8, 4, 4, 3), dtype=np.uint8),
           "token_ids": rng.integers(0, 100, (8, 5)).astype(np.int32)} for _ in range(n)]


def test_global_batches_in_order_with_equal_values_and_batch_sharding():
  mesh = sharding.make_mesh(test_config.get_config().mesh)
  hosts = _host_batches(5)
  placed = list(sharding.DevicePrefetch(iter(hosts), lambda b: sharding.to_global_batch(b, mesh), size=2))
  assert len(placed) == 5
  for host, device in zip(hosts, placed):
    assert set(device) == set(host)
    for key, value in host.items():
      assert isinstance(device[key], jax.Array)
      assert device[key].sharding == sharding.batch_sharding(mesh)
      np.testing.assert_array_equal(np.asarray(device[key]), value)


@pytest.mark.parametrize("size", [1, 2, 3])
def test_places_size_items_ahead_of_the_consumer(size):
  pulled = []

  def source():
    for i in range(10):
      pulled.append(i)
      yield i

  placed = []
  it = sharding.DevicePrefetch(source(), lambda x: placed.append(x) or x * 10, size=size)
  assert not pulled  # nothing happens before the first next()
  assert next(it) == 0
  assert placed == list(range(size))  # items 1 .. size-1 are placed while item 0 is used
  assert next(it) == 10
  assert placed == list(range(size + 1))
  assert list(it) == [10 * i for i in range(2, 10)]
  assert pulled == list(range(10))


def test_exhaustion_passes_through():
  it = sharding.DevicePrefetch(iter([1, 2, 3]), lambda x: -x, size=2)
  assert [next(it), next(it), next(it)] == [-1, -2, -3]
  with pytest.raises(StopIteration):
    next(it)
  with pytest.raises(StopIteration):  # and stays exhausted
    next(it)
  assert list(sharding.DevicePrefetch(iter([]), lambda x: x)) == []


def test_source_error_is_raised_after_the_items_before_it():
  def source():
    yield 1
    yield 2
    raise OSError("corrupt shard")

  it = sharding.DevicePrefetch(source(), lambda x: x, size=2)
  assert next(it) == 1   # the error was already met while filling, but 1 and 2 come first
  assert next(it) == 2
  with pytest.raises(OSError, match="corrupt shard"):
    next(it)


def test_place_error_propagates_and_size_is_checked():
  def bad_place(x):
    raise ValueError(f"cannot place {x}")

  with pytest.raises(ValueError, match="cannot place 0"):
    next(sharding.DevicePrefetch(iter([0, 1]), bad_place))
  with pytest.raises(ValueError, match="size"):
    sharding.DevicePrefetch(iter([]), lambda x: x, size=0)


def test_stats_are_the_sources():
  class Source:
    def __init__(self):
      self.n = 0

    def __next__(self):
      self.n += 1
      return self.n

    def stats(self):
      return {"seen": self.n}

  it = sharding.DevicePrefetch(Source(), lambda x: x, size=2)
  next(it)
  assert it.stats() == {"seen": 2}
  assert sharding.DevicePrefetch(iter([1]), lambda x: x).stats() == {}
