"""Checkpoint/resume: 4 steps straight equal 2 steps + restart + 2 steps; events and checkpoints are written."""
import dataclasses
import glob
import json
import os
import shutil
import signal
import time

import jax
import numpy as np
import pytest

from tests.core import tiny_setup
from xmc_gan_jax import checkpointing
from xmc_gan_jax import runtime
from xmc_gan_jax import train

pytestmark = pytest.mark.slow  # each test trains (compiles the train step)


def _train(workdir, total_steps, on_log=None):
  config = tiny_setup.tiny_config(**{"total_steps": total_steps, "checkpoint_every_steps": 2,
                                     "log_every_steps": 1, "sample_every_steps": 2})
  trainer = train.Trainer(config, text_encoder=tiny_setup.tiny_text_encoder())
  return trainer.run(str(workdir), on_log=on_log)


def _sigterm_at_step_1(step, scalars):
  del scalars
  if step == 1:
    os.kill(os.getpid(), signal.SIGTERM)


@pytest.fixture(scope="module")
def two_steps(tmp_path_factory):
  """A 4-step run sent SIGTERM after step 1's stop check: it stops at the next step boundary, after step 2, with a
  checkpoint of step 2. Returns (workdir, final step); tests that change the workdir get a copy (`_copy`)."""
  workdir = tmp_path_factory.mktemp("two_steps") / "run"
  state = _train(workdir, 4, on_log=_sigterm_at_step_1)
  return workdir, int(jax.device_get(state.step))


def test_sigterm_saves_and_stops_at_the_next_step(two_steps):
  workdir, step = two_steps
  assert step == 2
  assert checkpointing.Checkpointer(str(workdir), read_only=True).all_steps() == [2]
  assert not checkpointing.training_done(str(workdir))


def _copy(two_steps, tmp_path):
  target = tmp_path / "run"
  shutil.copytree(two_steps[0], target)
  return target


def test_resume_is_deterministic(tmp_path, two_steps):
  straight = jax.device_get(_train(tmp_path / "straight", 4))
  shutil.copytree(two_steps[0], tmp_path / "resumed")
  assert checkpointing.Checkpointer(str(tmp_path / "resumed"), read_only=True).latest_step() == 2
  resumed = jax.device_get(_train(tmp_path / "resumed", 4))
  assert int(resumed.step) == int(straight.step) == 4
  for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(straight), jax.tree.leaves(resumed)):
    np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-6, err_msg=jax.tree_util.keystr(path))
  steps = checkpointing.Checkpointer(str(tmp_path / "resumed"), read_only=True).all_steps()
  assert steps == [2, 4]
  assert glob.glob(os.path.join(tmp_path, "resumed", "events.out.tfevents.*"))


def test_events_hold_train_scalars(two_steps):
  from tensorboard.backend.event_processing import event_accumulator  # pylint: disable=g-import-not-at-top
  acc = event_accumulator.EventAccumulator(str(two_steps[0]), size_guidance={"tensors": 0, "images": 0})
  acc.Reload()
  tags = set(acc.Tags()["tensors"]) | set(acc.Tags()["scalars"])
  for tag in ("train/d_loss", "train/g_loss", "train/real_sentence_loss", "train/fake_word_accuracy",
              "train/image_loss", "train/steps_per_sec"):
    assert tag in tags, (tag, sorted(tags))
  assert "samples/ema" in set(acc.Tags()["images"]) | set(acc.Tags()["tensors"])


@pytest.mark.parametrize("budget", ["deadline", "max_train_seconds"])
def test_time_budget_stops_early_with_a_checkpoint(budget, tmp_path):
  # deadline: already passed, so exactly one step. max_train_seconds=1: on_log sleeps past it at step 1 (the
  # first step's compilation may already have), so training stops at step 1 or 2, far short of total_steps.
  config = tiny_setup.tiny_config(**{"total_steps": 50, "checkpoint_every_steps": 100, "log_every_steps": 1,
                                     "sample_every_steps": 100,
                                     "max_train_seconds": 1 if budget == "max_train_seconds" else 0})
  logged = []

  def on_log(step, scalars):
    del scalars
    logged.append(step)
    time.sleep(1.1)

  deadline = time.time() - 1.0 if budget == "deadline" else None
  state = train.Trainer(config, text_encoder=tiny_setup.tiny_text_encoder()).run(
      str(tmp_path), on_log=on_log, deadline=deadline)
  step = int(jax.device_get(state.step))
  assert step == 1 if budget == "deadline" else step in (1, 2)
  assert logged == list(range(1, step + 1))
  assert checkpointing.Checkpointer(str(tmp_path), read_only=True).all_steps() == [step]
  assert not checkpointing.training_done(str(tmp_path))


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path, two_steps):
  tmp_path = _copy(two_steps, tmp_path)
  config = tiny_setup.tiny_config(**{"total_steps": 4, "checkpoint_every_steps": 2, "log_every_steps": 1})
  good = tiny_setup.tiny_text_encoder()
  poisoned = dataclasses.replace(good, params=jax.tree.map(lambda x: x * np.nan, good.params))
  with pytest.raises(train.NonFiniteLossError, match="Last good checkpoint: 2"):
    train.Trainer(config, text_encoder=poisoned).run(str(tmp_path))
  assert checkpointing.Checkpointer(str(tmp_path), read_only=True).all_steps() == [2]
  assert not checkpointing.training_done(str(tmp_path))


def test_resume_refuses_other_text_features(tmp_path, two_steps):
  tmp_path = _copy(two_steps, tmp_path)
  config = tiny_setup.tiny_config(**{"total_steps": 4, "text_encoder.features": "random_words"})
  trainer = train.Trainer(config, text_encoder=tiny_setup.tiny_text_encoder())
  with pytest.raises(ValueError, match="trained with text_encoder.features='contextual', but this config has "
                                       "'random_words'"):
    trainer.run(str(tmp_path))
  # A key the saved config lacks (it predates the option) is not compared; the others are compared as saved.
  saved = json.loads(tiny_setup.tiny_config().to_json_best_effort())
  del saved["text_encoder"]["features"]
  runtime.check_same_setup({"config": json.dumps(saved)},
                           tiny_setup.tiny_config(**{"text_encoder.features": "random_words"}), "x")
  saved["text_encoder"]["pooling"] = "cls"
  with pytest.raises(ValueError, match="text_encoder.pooling='cls'"):
    runtime.check_same_setup({"config": json.dumps(saved)}, tiny_setup.tiny_config(), "x")


def test_resume_refuses_other_network_shapes(tmp_path, two_steps):
  tmp_path = _copy(two_steps, tmp_path)
  config = tiny_setup.tiny_config(**{"total_steps": 4, "model.g_channel_multipliers": (3, 1, 2)})
  trainer = train.Trainer(config, text_encoder=tiny_setup.tiny_text_encoder())
  with pytest.raises(ValueError, match=r"trained with model.g_channel_multipliers=\(\), but this config has "
                                       r"\(3, 1, 2\): the checkpoint's networks have another architecture"):
    trainer.run(str(tmp_path))
  saved = json.loads(tiny_setup.tiny_config(**{"model.g_channel_multipliers": (3, 1, 2)}).to_json_best_effort())
  assert saved["model"]["g_channel_multipliers"] == [3, 1, 2]  # JSON keeps tuples as lists
  runtime.check_same_setup({"config": json.dumps(saved)},
                           tiny_setup.tiny_config(**{"model.g_channel_multipliers": (3, 1, 2)}), "x")
  with pytest.raises(ValueError, match="model.gf_dim=4, but this config has 8"):
    runtime.check_same_setup({"config": json.dumps(saved)}, tiny_setup.tiny_config(**{"model.gf_dim": 8}), "x")
