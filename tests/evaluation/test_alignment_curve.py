"""tools/alignment_curve.py: every kept checkpoint's EMA generator scored by the shapes verifier, in step order.

The checkpoints are real (test config, saved and restored through orbax); the eval captions are rendered scenes,
and the trainer's sampler is a stub that draws each caption's true scene for one checkpoint's EMA params and blank
grey otherwise, so the expected rows are the verifier's own summaries of those two image sets.
"""
import importlib.util
import json
import pathlib
import shutil

import jax
import numpy as np
import pytest

from configs import test as test_config
from tests.evaluation import shapes_batches
from xmc_gan_jax import checkpointing, runtime, sharding
from xmc_gan_jax.data import shapes_scene, shapes_verifier, sources

pytestmark = pytest.mark.slow  # compiles the initial state

ROOT = pathlib.Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("alignment_curve", ROOT / "tools" / "alignment_curve.py")
alignment_curve = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(alignment_curve)
NUM_SCENES = 11


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  """Workdir with checkpoints at steps 3 and 7 (7's EMA params differ) of a shapes-named test config."""
  workdir = tmp_path_factory.mktemp("curve") / "run"
  config = test_config.get_config()
  config.dataset.name = "shapes"
  config.eval.batch_size = 4
  trainer = runtime.Runtime(config, mesh=sharding.make_mesh(config.mesh, jax.devices()[:1]))
  first = trainer.init_state()
  second = first.replace(ema_params=jax.tree.map(lambda x: x + 1.0, first.ema_params))
  checkpointer = checkpointing.Checkpointer(str(workdir))
  for step, state in ((3, first), (7, second)):
    checkpointer.save(step, state, {"config": config.to_json_best_effort()})
  checkpointer.close()
  rng = np.random.default_rng(5)
  scenes = [shapes_scene.sample_scene(rng) for _ in range(NUM_SCENES)]
  images = np.stack([shapes_scene.render_scene(s, 32) for s in scenes])
  marker = np.asarray(jax.tree.leaves(second.ema_params)[0])
  return dict(workdir=workdir, config=config, trainer=trainer, scenes=scenes, images=images, marker=marker)


def _stub_sampler(run):
  def samples(params, batch_stats, token_ids, token_mask, z):
    del batch_stats, token_mask, z
    index = np.asarray(token_ids)[:, 1]
    if np.allclose(np.asarray(jax.tree.leaves(params)[0]), run["marker"]):
      return run["images"][index].astype(np.float32) / 255.0
    return np.full((len(index), 32, 32, 3), 0.5, np.float32)
  return samples


@pytest.fixture
def patched(run, monkeypatch):
  monkeypatch.setattr(sources, "eval_source", lambda config, vocab_path, vocab_size, num_examples, batch_size,
                      seed_offset=0: shapes_batches.shapes_batches(run["scenes"][:num_examples],
                                                                   run["images"], batch_size))
  monkeypatch.setattr(runtime.Runtime, "samples", lambda self, *a: _stub_sampler(run)(*a))
  return run


def _expected(images, scenes):
  objects = shapes_scene.pad_objects(scenes)
  scores = shapes_verifier.score_images(images, objects)
  summary = shapes_verifier.summarize(scores, objects["num_objects"])
  return {f"ema_{k}": v for k, v in summary.items()}


def test_rows_follow_the_checkpoints(patched):
  checkpointer = checkpointing.Checkpointer(str(patched["workdir"]), read_only=True)
  rows = alignment_curve.score_checkpoints(patched["trainer"], patched["config"], checkpointer, NUM_SCENES,
                                           untrained=True)
  checkpointer.close()
  assert [r["step"] for r in rows] == [0, 3, 7]
  perfect = _expected(patched["images"], patched["scenes"])
  blank = _expected(np.full_like(patched["images"], 128), patched["scenes"])
  assert perfect["ema_align_color_position"] > 0.9 and blank["ema_align_color_position"] == 0.0
  for row, expected in zip(rows, (blank, blank, perfect)):
    for key in alignment_curve.COLUMNS:
      assert row[key] == pytest.approx(expected[key]), (row["step"], key)


def test_command_writes_table_and_json_and_reuses_rows(patched, capsys, monkeypatch):
  assert alignment_curve.main([f"--workdir={patched['workdir']}", "--images=6"]) == 0
  rows = json.loads((patched["workdir"] / "alignment_curve.json").read_text())
  assert [r["step"] for r in rows] == [3, 7]
  expected = _expected(patched["images"][:6], patched["scenes"][:6])
  assert rows[1]["ema_align_all"] == pytest.approx(expected["ema_align_all"])
  table = (patched["workdir"] / "alignment_curve.md").read_text()
  assert table.splitlines()[3].startswith("| 7 | ") and table in capsys.readouterr().out
  # A second call reuses the scored steps (the sampler now fails if called) ...
  monkeypatch.setattr(runtime.Runtime, "samples", lambda self, *a: pytest.fail("re-scored a known step"))
  assert alignment_curve.main([f"--workdir={patched['workdir']}", "--images=6"]) == 0
  assert json.loads((patched["workdir"] / "alignment_curve.json").read_text()) == rows
  # ... but not rows scored on another number of captions.
  with pytest.raises(pytest.fail.Exception, match="re-scored"):
    alignment_curve.main([f"--workdir={patched['workdir']}", "--images=5"])


def test_bad_input(run, tmp_path):
  with pytest.raises(FileNotFoundError, match="No checkpoint"):
    alignment_curve.main([f"--workdir={tmp_path}"])
  with pytest.raises(ValueError, match="--images"):
    alignment_curve.main([f"--workdir={run['workdir']}", "--images=0"])
  other = tmp_path / "coco_run"
  config = test_config.get_config()
  checkpointer = checkpointing.Checkpointer(str(other))
  checkpointer.save(1, run["trainer"].init_state(), {"config": config.to_json_best_effort()})
  checkpointer.close()
  with pytest.raises(ValueError, match="captioned shapes only"):
    alignment_curve.main([f"--workdir={other}"])


def test_gcs_workdir(patched, tmp_path, monkeypatch):
  """The same run on (fake) gs://: the checkpoints are read there, the table and JSON written there and re-read."""
  from tests import fake_gcs  # pylint: disable=import-outside-toplevel
  with fake_gcs.mount(tmp_path / "gcs") as root:
    shutil.copytree(patched["workdir"] / checkpointing.CHECKPOINT_DIR, root / "bucket" / "run" / "checkpoints")
    assert alignment_curve.main(["--workdir=gs://bucket/run", "--images=6"]) == 0
    rows = json.loads((root / "bucket" / "run" / "alignment_curve.json").read_text())
    assert [r["step"] for r in rows] == [3, 7]
    assert (root / "bucket" / "run" / "alignment_curve.md").read_text().splitlines()[3].startswith("| 7 | ")
    monkeypatch.setattr(runtime.Runtime, "samples", lambda self, *a: pytest.fail("re-scored a known step"))
    assert alignment_curve.main(["--workdir=gs://bucket/run", "--images=6"]) == 0
