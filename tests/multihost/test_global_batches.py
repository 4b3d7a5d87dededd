"""Random data gives the same global batches on any process count (fast: numpy only, no processes).

Process p of P feeds rows that, after the runtime's `steps.split_batch(local, k)` and placement with process 0's
devices first, make each global sub-batch equal to the one-process sub-batch; eval batches (k = 1) are plain row
ranges. On one process the batches are those of the original one-process source (frozen below).
"""
import numpy as np
import pytest

from configs import test as test_config
from xmc_gan_jax import steps
from xmc_gan_jax.data import random_source
from xmc_gan_jax.data import sources

ARGS = dict(seed=3, batch_size=16, image_size=10, max_length=9, vocab_size=1100)


def _one_process_reference(seed, step, batch_size, image_size, max_length, vocab_size):
  """The source as it was before process counts mattered (one process, process_index 0)."""
  rng = np.random.default_rng([seed, step, 0])
  coarse = rng.integers(0, 256, size=(batch_size, 4, 4, 3), dtype=np.uint8)
  image = np.repeat(np.repeat(coarse, -(-image_size // 4), axis=1), -(-image_size // 4), axis=2)
  lengths = rng.integers(3, max_length + 1, size=batch_size)
  mask = (np.arange(max_length)[None, :] < lengths[:, None]).astype(np.int32)
  ids = np.where(mask == 1, rng.integers(1000, vocab_size, size=(batch_size, max_length)), 0)
  ids[:, 0] = random_source.CLS_ID
  ids[np.arange(batch_size), lengths - 1] = random_source.SEP_ID
  return {"image": image[:, :image_size, :image_size], "token_ids": ids.astype(np.int32), "token_mask": mask}


def test_one_process_batches_are_unchanged():
  for step in (0, 5):
    got = random_source.random_batch(step=step, **ARGS)
    want = _one_process_reference(step=step, **ARGS)
    for key in want:
      np.testing.assert_array_equal(got[key], want[key], err_msg=key)
      assert got[key].dtype == want[key].dtype


@pytest.mark.parametrize("processes,k", [(2, 2), (4, 2), (2, 1), (8, 2), (4, 4)])
def test_sub_batches_of_p_processes_equal_the_one_process_sub_batches(processes, k):
  whole = steps.split_batch(random_source.random_batch(step=7, **ARGS), k)
  parts = [steps.split_batch(random_source.random_batch(step=7, process_index=p, process_count=processes,
                                                         sub_batches=k, **ARGS), k) for p in range(processes)]
  for key, want in whole.items():
    # make_array_from_process_local_data on [k, n/P] blocks: process p's block is columns [p n/P, (p+1) n/P).
    np.testing.assert_array_equal(np.concatenate([part[key] for part in parts], axis=1), want, err_msg=key)


def test_local_rows_layout_and_errors():
  np.testing.assert_array_equal(random_source.local_rows(8, 1, 2, 2), [2, 3, 6, 7])
  np.testing.assert_array_equal(random_source.local_rows(8, 1, 2, 1), [4, 5, 6, 7])
  with pytest.raises(ValueError, match="divisible"):
    random_source.local_rows(12, 0, 4, 2)
  with pytest.raises(ValueError, match="outside"):
    random_source.RandomBatches(process_index=2, process_count=2, **ARGS)


def test_sources_pass_process_count_and_sub_batches(monkeypatch):
  config = test_config.get_config()
  config.optim.d_steps_per_g_step = 2
  one = next(sources.train_source(config, "", 1100, start_step=3))
  evals_one = list(sources.eval_source(config, "", 1100, num_examples=12, batch_size=8))
  monkeypatch.setattr(sources.jax, "process_count", lambda: 2)
  for p in range(2):
    monkeypatch.setattr(sources.jax, "process_index", lambda p=p: p)
    local = next(sources.train_source(config, "", 1100, start_step=3))
    rows = random_source.local_rows(config.batch_size, p, 2, 2)
    evals = list(sources.eval_source(config, "", 1100, num_examples=12, batch_size=8))
    assert len(evals) == len(evals_one) == 2
    for key in sources.DEVICE_KEYS:
      np.testing.assert_array_equal(local[key], one[key][rows], err_msg=key)
      for got, want in zip(evals, evals_one):
        np.testing.assert_array_equal(got[key], want[key][p * 4:(p + 1) * 4], err_msg=key)
