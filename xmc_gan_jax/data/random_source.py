"""A TensorFlow-free random data source with the batch contract of DESIGN.md §5 (tests, benchmarks, GPU checks).

The GLOBAL batch at step s is a pure function of (seed, s), whatever the process count, so a resumed run sees
the same batches and a run on P processes sees the same examples as a run on one. Process p of P keeps the rows
that the runtime places on its devices (`local_rows`): after `steps.split_batch(local, k)` into [k, n/P] and
`make_array_from_process_local_data` over a mesh whose batch axis lists process 0's devices first, global
sub-batch i is sub-batch i of the one-process batch; with k = 1 (evaluation) that is rows [p n/P, (p+1) n/P).
"""
from collections.abc import Iterator

import numpy as np

CLS_ID, SEP_ID = 101, 102
_FIRST_WORDPIECE = 1000   # skip [PAD]/[unused]/[CLS]/[SEP]/[MASK] in BERT vocabularies


def local_rows(global_size: int, process_index: int = 0, process_count: int = 1, sub_batches: int = 1) -> np.ndarray:
  """Rows of a global batch [global_size, ...] that process `process_index` of `process_count` feeds, in its order:
  arange(global_size).reshape(k, P, n / (k P))[:, p].reshape(-1) with k = `sub_batches`."""
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index {process_index} is outside [0, {process_count}).")
  if sub_batches < 1 or global_size % (sub_batches * process_count):
    raise ValueError(f"batch size {global_size} must be divisible by sub_batches * process_count = "
                     f"{sub_batches} * {process_count}.")
  rows = np.arange(global_size).reshape(sub_batches, process_count, global_size // (sub_batches * process_count))
  return rows[:, process_index].reshape(-1)


def random_batch(seed: int, step: int, batch_size: int, image_size: int, max_length: int, vocab_size: int,
                 process_index: int = 0, *, process_count: int = 1, sub_batches: int = 1) -> dict[str, np.ndarray]:
  """This process's rows of the global batch of `batch_size` examples at `step` (all of it on one process):
  `image` uint8 [b,S,S,3]; `token_ids`/`token_mask` int32 [b,T] ([CLS] words [SEP], 0-pad), b = batch_size / P.

  Only the small random draws are made for the whole global batch; images are expanded for the local rows."""
  rows = local_rows(batch_size, process_index, process_count, sub_batches)
  rng = np.random.default_rng([seed, step, 0])
  # Smooth colour fields rather than white noise: closer to images, still cheap.
  coarse = rng.integers(0, 256, size=(batch_size, 4, 4, 3), dtype=np.uint8)[rows]
  image = np.repeat(np.repeat(coarse, -(-image_size // 4), axis=1), -(-image_size // 4), axis=2)
  image = image[:, :image_size, :image_size]
  lengths = rng.integers(3, max_length + 1, size=batch_size)[rows]  # includes [CLS] and [SEP]
  words = rng.integers(_FIRST_WORDPIECE, vocab_size, size=(batch_size, max_length))[rows]
  positions = np.arange(max_length)[None, :]
  token_mask = (positions < lengths[:, None]).astype(np.int32)
  token_ids = np.where(token_mask == 1, words, 0)
  token_ids[:, 0] = CLS_ID
  token_ids[np.arange(rows.size), lengths - 1] = SEP_ID
  return {"image": np.ascontiguousarray(image), "token_ids": token_ids.astype(np.int32), "token_mask": token_mask}


class RandomBatches(Iterator):
  """Infinite iterator of `random_batch`es (this process's rows of global batches of `batch_size`) starting at
  `start_step`."""

  def __init__(self, seed: int, batch_size: int, image_size: int, max_length: int, vocab_size: int,
               start_step: int = 0, process_index: int = 0, *, process_count: int = 1, sub_batches: int = 1):
    local_rows(batch_size, process_index, process_count, sub_batches)  # fail here, not at the first batch
    self._args = dict(seed=seed, batch_size=batch_size, image_size=image_size, max_length=max_length,
                      vocab_size=vocab_size, process_index=process_index, process_count=process_count,
                      sub_batches=sub_batches)
    self._step = start_step

  def __next__(self) -> dict[str, np.ndarray]:
    batch = random_batch(step=self._step, **self._args)
    self._step += 1
    return batch

  def stats(self) -> dict[str, int]:
    return {}
