"""Issue 18, "nothing lost, nothing hung": config holes rejected before any compile, a damaged latest checkpoint
skipped for the previous complete one (logged and written to TensorBoard), an unwritable checkpoints folder
refused at once, orbax's read-only notice silenced where we open checkpoints read-only on purpose, and a text
encoder with non-finite weights refused when it is loaded."""
import dataclasses
import glob
import logging
import os
import shutil

import jax
import numpy as np
import pytest
from absl import logging as absl_logging

from tests.core import tiny_setup
from xmc_gan_jax import checkpointing
from xmc_gan_jax import config_validation
from xmc_gan_jax import runtime
from xmc_gan_jax import train

# ---- 1, 2: every count, interval and size is validated before anything is compiled ----------------------------

BAD_VALUES = [
    ("keep_checkpoints", 0), ("keep_checkpoints", -1),
    ("log_every_steps", 0), ("checkpoint_every_steps", 0), ("sample_every_steps", 0),
    ("batch_size", 0), ("batch_size", -16), ("total_steps", -1), ("total_steps", 0),
    ("num_sample_images", -1), ("max_train_seconds", -5),
    ("eval.num_images", -1), ("eval.batch_size", -8), ("eval.batch_size", 0), ("eval.every_steps", -1),
    ("eval.repeats", 0), ("eval.standalone_num_images", -1), ("model.z_dim", 0), ("text_encoder.max_length", 1),
]


@pytest.mark.parametrize("field,value", BAD_VALUES)
def test_validate_names_the_field_and_a_valid_example(field, value):
  config = tiny_setup.tiny_config(**{field: value})
  with pytest.raises(ValueError, match=rf"{field}={value}\b.*e\.g\. --config\.{field}=\d+"):
    config_validation.validate(config, batch_shards=8)


def test_validate_accepts_off_switches_and_skips_fields_an_old_config_lacks():
  config = tiny_setup.tiny_config(**{"eval.every_steps": 0, "max_train_seconds": 0, "eval.follow_timeout_seconds": 0})
  config_validation.validate(config, batch_shards=8)
  del config.eval["repeats"]  # a checkpoint's saved config that predates the field
  config_validation.validate(config, batch_shards=8)


# ---- 4: an unwritable checkpoints folder fails at once, naming it ------------------------------------------------

def _make_unwritable(workdir):
  """WORKDIR/checkpoints that cannot be written: read-only for a normal user; as root (which ignores the mode),
  a regular file of that name, which no save could write into either."""
  os.makedirs(workdir, exist_ok=True)
  target = os.path.join(workdir, checkpointing.CHECKPOINT_DIR)
  if os.geteuid() != 0:
    os.makedirs(target)
    os.chmod(target, 0o500)
  else:
    with open(target, "w") as f:
      f.write("not a folder\n")
  return target


def test_unwritable_checkpoints_folder_fails_fast_with_its_path(tmp_path):
  target = _make_unwritable(tmp_path / "run")
  with pytest.raises(PermissionError, match=f"checkpoints folder {target} is not writable"):
    checkpointing.Checkpointer(str(tmp_path / "run"))
  trainer = train.Trainer(tiny_setup.tiny_config(), text_encoder=tiny_setup.tiny_text_encoder())
  with pytest.raises(PermissionError, match="is not writable"):  # before the state is built or a step compiled
    trainer.run(str(tmp_path / "run"))
  assert not glob.glob(str(tmp_path / "run" / "events.out.tfevents.*"))


# ---- 8: orbax's read-only notice is silenced for our read-only checkpointers only ----------------------------------

def test_read_only_notice_is_silenced_other_warnings_pass(tmp_path, caplog):
  checkpointing.Checkpointer(str(tmp_path)).close()  # creates checkpoints/
  with caplog.at_level(logging.WARNING):
    checkpointing.Checkpointer(str(tmp_path), read_only=True).close()
    absl_logging.warning("Given directory is read only: a warning of our own after the manager exists")
    absl_logging.warning("another orbax warning")
  messages = [r.getMessage() for r in caplog.records]
  assert not any(m.startswith("Given directory is read only=") for m in messages), messages
  assert "another orbax warning" in messages
  assert any(m.startswith("Given directory is read only: a warning") for m in messages)


# ---- 9: a text encoder with NaN weights is refused where it is loaded ---------------------------------------------

def test_non_finite_text_encoder_weights_are_refused_naming_the_folder(monkeypatch):
  good = tiny_setup.tiny_text_encoder()
  leaves, treedef = jax.tree.flatten(good.params)
  leaves[1] = leaves[1].at[0].set(np.nan)
  poisoned = dataclasses.replace(good, params=jax.tree.unflatten(treedef, leaves),
                                 vocab_path="/models/damaged-bert/vocab.txt")
  monkeypatch.setattr(runtime.text_encoder_lib, "load_text_encoder", lambda *a, **k: poisoned)
  with pytest.raises(ValueError, match=r"text encoder in /models/damaged-bert has 1 non-finite weights"):
    runtime.Runtime(tiny_setup.tiny_config())
  monkeypatch.setattr(runtime.text_encoder_lib, "load_text_encoder", lambda *a, **k: good)
  runtime.Runtime(tiny_setup.tiny_config())  # finite weights pass


# ---- 3: a damaged latest checkpoint falls back to the previous complete one ---------------------------------------

def _config(total_steps):
  return tiny_setup.tiny_config(**{"total_steps": total_steps, "checkpoint_every_steps": 2, "log_every_steps": 2,
                                   "sample_every_steps": 100})


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """A tiny run with checkpoints at steps 2 and 4."""
  workdir = tmp_path_factory.mktemp("robust") / "run"
  train.Trainer(_config(4), text_encoder=tiny_setup.tiny_text_encoder()).run(str(workdir))
  assert checkpointing.Checkpointer(str(workdir), read_only=True).all_steps() == [2, 4]
  return workdir


def _truncate_largest_data_file(workdir, step):
  files = [f for f in glob.glob(os.path.join(workdir, "checkpoints", str(step), "state", "**", "d", "*"),
                                recursive=True) if os.path.isfile(f)]
  assert files, os.listdir(os.path.join(workdir, "checkpoints", str(step), "state"))
  largest = max(files, key=os.path.getsize)
  with open(largest, "r+b") as f:
    f.truncate(os.path.getsize(largest) // 2)
  return largest


@pytest.mark.slow
def test_damaged_latest_checkpoint_falls_back_to_the_previous_one(trained, tmp_path, caplog):
  from tensorboard.backend.event_processing import event_accumulator  # pylint: disable=g-import-not-at-top
  workdir = tmp_path / "run"
  shutil.copytree(trained, workdir)
  _truncate_largest_data_file(workdir, 4)
  trainer = train.Trainer(_config(4), text_encoder=tiny_setup.tiny_text_encoder())
  with caplog.at_level(logging.WARNING):
    state = trainer.run(str(workdir))
  assert int(jax.device_get(state.step)) == 4  # resumed from 2, trained 2 more steps, saved 4 again
  warnings = [r.getMessage() for r in caplog.records if "Skipping damaged checkpoint" in r.getMessage()]
  assert len(warnings) == 1 and "step 4" in warnings[0] and str(workdir / "checkpoints") in warnings[0], warnings
  assert "\n" not in warnings[0] and len(warnings[0]) < 600
  assert trainer.skipped_checkpoints[0][0] == 4
  assert os.path.isdir(workdir / checkpointing.DAMAGED_DIR / "4" / "state")  # kept, not deleted
  assert checkpointing.Checkpointer(str(workdir), read_only=True).all_steps() == [2, 4]
  assert checkpointing.training_done(str(workdir))
  acc = event_accumulator.EventAccumulator(str(workdir), size_guidance={"tensors": 0, "scalars": 0})
  acc.Reload()
  tags = set(acc.Tags()["tensors"]) | set(acc.Tags()["scalars"])
  assert {"checkpoint/skipped_damaged_step", "checkpoint/skipped_damaged"} <= tags, sorted(tags)


@pytest.mark.slow
def test_no_restorable_checkpoint_is_an_error_naming_the_folder(trained, tmp_path):
  workdir = tmp_path / "run"
  shutil.copytree(trained, workdir)
  for step in (2, 4):
    _truncate_largest_data_file(workdir, step)
  trainer = train.Trainer(_config(6), text_encoder=tiny_setup.tiny_text_encoder())
  with pytest.raises(RuntimeError, match=rf"None of the checkpoints in {workdir / 'checkpoints'} \(steps \[2, 4\]\)"):
    trainer.run(str(workdir))
  assert checkpointing.Checkpointer(str(workdir), read_only=True).all_steps() == [2, 4]  # nothing moved
