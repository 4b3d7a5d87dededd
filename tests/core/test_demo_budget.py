"""Issue 18 for `make demo`: progress lines survive a closed stdout, the evaluation reserve is measured (a slower
evaluation moves the training deadline earlier, and the whole run still fits its budget), and the untrained
generator's scores are cached by the settings that decide them.

The end-to-end demo (shapes dataset build, Inception weights, compiles) costs minutes here, so the budget is tested
through its pure pieces: `measure_eval_batch` on a fake runtime and extractor that sleep, then
`eval_batches` / `eval_reserve_seconds` / `training_deadline`."""
import sys
import time
import types

import numpy as np
import pytest

from tests.core import tiny_setup
from xmc_gan_jax import demo


class _ClosedPipe:
  def write(self, text):
    raise BrokenPipeError(32, "Broken pipe")

  def flush(self):
    raise BrokenPipeError(32, "Broken pipe")


def test_log_survives_a_closed_stdout(monkeypatch):
  monkeypatch.setattr(demo, "_stdout_closed", False, raising=False)
  monkeypatch.setattr(sys, "stdout", _ClosedPipe())
  demo._log("step 25 | progress")   # the pipe closed: no exception
  demo._log("step 50 | progress")   # nor later
  demo._print("  ema_fid 1.0")
  assert getattr(demo, "_stdout_closed")


def _fake(seconds_per_call, image_size=32):
  """A runtime whose generator and an extractor that each sleep `seconds_per_call`."""
  def samples(params, batch_stats, ids, mask, z):
    time.sleep(seconds_per_call)
    return np.zeros((ids.shape[0], image_size, image_size, 3), np.float32)

  trainer = types.SimpleNamespace(
      abstract_state=types.SimpleNamespace(ema_params={}, g_batch_stats={}),
      state_shardings=types.SimpleNamespace(ema_params={}, g_batch_stats={}), samples=samples)
  return trainer, lambda images: time.sleep(seconds_per_call)


@pytest.mark.parametrize("slow_seconds", [0.0, 0.05])
def test_measured_reserve_keeps_a_slowed_evaluation_inside_the_budget(slow_seconds):
  config = tiny_setup.tiny_config()
  trainer, extractor = _fake(slow_seconds)
  per_batch = demo.measure_eval_batch(trainer, extractor, config, batch_size=8)
  assert per_batch >= 2 * slow_seconds
  batches = demo.eval_batches(8, align_images=32, fid_images=16, untrained_cached=False, real_stats_cached=False)
  assert batches == 4 + 2 + 2 + 2
  reserve = demo.eval_reserve_seconds(per_batch, batches, fixed=0.0)
  budget_end = time.time() + reserve + 0.2  # 0.2 s of "training" (the tolerance: the margin above 1x)
  deadline = demo.training_deadline(budget_end, reserve)
  time.sleep(max(0.0, deadline - time.time()))  # train until the deadline
  for _ in range(batches):  # the evaluation, as slow as measured
    demo.measure_eval_batch(trainer, extractor, config, batch_size=8, repeats=1)
  assert time.time() <= budget_end + 0.05


def test_reserve_scales_with_the_measurement_and_the_cache():
  cached = demo.eval_batches(32, 512, 256, untrained_cached=True, real_stats_cached=True)
  fresh = demo.eval_batches(32, 512, 256, untrained_cached=False, real_stats_cached=False)
  assert (cached, fresh) == (16 + 8, 16 + 24)
  assert demo.eval_reserve_seconds(2.0, cached) == demo.EVAL_FIXED_SECONDS + demo.EVAL_MARGIN * 48.0
  assert demo.eval_reserve_seconds(4.0, cached) > demo.eval_reserve_seconds(2.0, cached)  # slower machine
  assert demo.training_deadline(1000.0, 90.0) == 910.0


def test_untrained_cache_is_keyed_by_what_decides_the_scores(tmp_path):
  base = tiny_setup.tiny_config()
  path = demo.untrained_cache_path(base, str(tmp_path), 256, "default_1")
  assert path.startswith(str(tmp_path)) and path == demo.untrained_cache_path(tiny_setup.tiny_config(),
                                                                                str(tmp_path), 256, "default_1")
  others = [demo.untrained_cache_path(tiny_setup.tiny_config(**{"seed": 1}), str(tmp_path), 256, "default_1"),
            demo.untrained_cache_path(tiny_setup.tiny_config(**{"model.gf_dim": 8}), str(tmp_path), 256, "default_1"),
            demo.untrained_cache_path(tiny_setup.tiny_config(**{"text_encoder.features": "random_words"}),
                                      str(tmp_path), 256, "default_1"),
            demo.untrained_cache_path(base, str(tmp_path), 128, "default_1"),
            demo.untrained_cache_path(base, str(tmp_path), 256, "pt_inception")]
  assert len({path, *others}) == 6
  # Training settings do not change an untrained generator's scores: the cache is shared.
  assert demo.untrained_cache_path(tiny_setup.tiny_config(**{"optim.g_lr": 1.0}), str(tmp_path), 256,
                                   "default_1") == path
  demo._write_json(path, {"ema_fid": 300.0})
  assert demo._read_json(path) == {"ema_fid": 300.0}


@pytest.mark.slow
def test_measure_eval_batch_runs_the_real_generator():
  from xmc_gan_jax import train  # pylint: disable=g-import-not-at-top
  config = tiny_setup.tiny_config()
  trainer = train.Trainer(config, text_encoder=tiny_setup.tiny_text_encoder())
  seen = []
  seconds = demo.measure_eval_batch(trainer, lambda images: seen.append(images.shape), config, batch_size=8)
  assert seconds > 0 and seen == [(8, 32, 32, 3)] * 2
